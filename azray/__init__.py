"""azray: the command line for the Ray serverless autoscaler on Azure (`azray up`, `status`, `down`, ...).

It talks to the control plane's HTTP API only; it imports nothing from the function app, so users install it on their
own machines with `pip install '.[cli]'` (docs/cli.md).
"""

__version__ = "0.1.0"
