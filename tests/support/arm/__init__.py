"""The loopback ARM emulator, split by concern: emulator.py (resources, operations, routing), rbac.py (roles and
the actions a request needs), throttling.py (request budgets), errors.py (Azure's error answers).
Import it through tests.support.arm_emulator."""
