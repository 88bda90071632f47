"""The cost simulator's parts (bench/simulate.py is its entry point; docs/decisions/simulator.md says what is modelled).

`traces` makes the demand, `cluster` the node types with their prices and luck, `world` the discrete-event core that
both policies run in, `ours` and `ray_policy` the two autoscalers, `plots` the figures.
"""
