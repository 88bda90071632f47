"""The domain of the serverless Ray autoscaler: config, model, lifecycle, planner, reconcile, state, service."""
