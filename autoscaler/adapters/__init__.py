"""Adapters of the core's ports that are not a cloud: cluster state (Table Storage, and in memory for tests), the
reconcile queue (Storage Queue), and the head agent client (HTTP). Cloud plugins live in provisioning/.

They import the core (autoscaler.ports, model, config...); the core never imports them (import-linter, `make lint`).
"""
