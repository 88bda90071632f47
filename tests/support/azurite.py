"""Tests use the same Azurite launcher as `make run` and `make demo`."""

from local.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite, free_port, start_azurite

__all__ = ["ACCOUNT_KEY", "ACCOUNT_NAME", "Azurite", "free_port", "start_azurite"]
