"""The function metadata the Azure host indexes: every trigger, with its binding, route, auth level and queue."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

import function_app

EXPECTED: dict[str, dict[str, Any]] = {
    "create_cluster": {"type": "httpTrigger", "route": "clusters", "methods": ["POST"], "authLevel": "FUNCTION"},
    "list_clusters": {"type": "httpTrigger", "route": "clusters", "methods": ["GET"], "authLevel": "FUNCTION"},
    "get_cluster": {"type": "httpTrigger", "route": "clusters/{name}", "methods": ["GET"], "authLevel": "FUNCTION"},
    "destroy_cluster": {
        "type": "httpTrigger",
        "route": "clusters/{name}",
        "methods": ["DELETE"],
        "authLevel": "FUNCTION",
    },
    "request_reconcile": {
        "type": "httpTrigger",
        "route": "clusters/{name}/reconcile",
        "methods": ["POST"],
        "authLevel": "ANONYMOUS",
    },
    "health": {"type": "httpTrigger", "route": "health", "methods": ["GET"], "authLevel": "ANONYMOUS"},
    "openapi": {"type": "httpTrigger", "route": "openapi.json", "methods": ["GET"], "authLevel": "ANONYMOUS"},
    "reconcile_timer": {"type": "timerTrigger", "schedule": "%RECONCILE_SCHEDULE%", "runOnStartup": False},
    "reconcile_worker": {"type": "queueTrigger", "queueName": "reconcile", "connection": "AzureWebJobsStorage"},
    "reconcile_poison": {"type": "queueTrigger", "queueName": "reconcile-poison", "connection": "AzureWebJobsStorage"},
}


def _triggers() -> dict[str, dict[str, Any]]:
    # A fresh interpreter: get_functions() validates names and may be called once per app object.
    code = (
        "import json, function_app\n"
        "out = {}\n"
        "for f in function_app.app.get_functions():\n"
        "    t = json.loads(f.get_function_json())\n"
        "    out[f.get_function_name()] = [b for b in t['bindings'] if b['type'].endswith('Trigger')][0]\n"
        "print(json.dumps(out))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    triggers: dict[str, dict[str, Any]] = json.loads(output)
    return triggers


@pytest.fixture(scope="module")
def triggers() -> dict[str, dict[str, Any]]:
    return _triggers()


def test_every_function_is_indexed(triggers: dict[str, dict[str, Any]]):
    assert set(triggers) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_trigger_binding_is_as_designed(triggers: dict[str, dict[str, Any]], name: str):
    binding = triggers[name]
    for key, value in EXPECTED[name].items():
        actual = binding.get(key)
        if key == "authLevel":
            actual = str(actual).upper()
        if key == "methods":
            actual = [str(m).upper() for m in actual or []]
        assert actual == value, f"{name}.{key}: {actual!r} != {value!r}"


def test_importing_the_app_does_not_import_the_management_sdks():
    heavy = "('azure.mgmt', 'azure.identity', 'azure.data', 'azure.storage', 'ray')"
    code = f"import sys, function_app; print([m for m in sys.modules if m.startswith({heavy})])"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert output == "[]"


def test_app_object_is_the_v2_programming_model():
    assert function_app.app.__class__.__name__ == "FunctionApp"
