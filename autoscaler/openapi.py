"""The OpenAPI 3.1 document, generated from the pydantic models that the handlers return."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

API_VERSION = "0.1.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(description: str, schema: str | None = None, media: str = "application/json") -> dict[str, Any]:
    body: dict[str, Any] = {"description": description}
    if schema:
        body["content"] = {media: {"schema": _ref(schema)}}
    return body


PROBLEM = "application/problem+json"


@cache
def openapi_document() -> dict[str, Any]:
    from autoscaler.config import ClusterConfig
    from autoscaler.views import (
        AcceptedResponse,
        ClusterList,
        ClusterView,
        CreateResponse,
        Health,
        Problem,
        UpdateResponse,
        WakeRequest,
    )

    models: list[type[BaseModel]] = [
        ClusterConfig,
        CreateResponse,
        ClusterList,
        ClusterView,
        AcceptedResponse,
        UpdateResponse,
        WakeRequest,
        Health,
        Problem,
    ]
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    _provider_union(schemas)
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    # Every status a route answers is listed with it (tests/unit/test_function_app.py provokes each one).
    invalid = _response("Invalid input; `errors` names every failing field", "Problem", PROBLEM)
    not_found = _response("No such cluster (or not a valid cluster name)", "Problem", PROBLEM)
    keeps_changing = _response("The cluster kept changing under the request; try again", "Problem", PROBLEM)
    unavailable = _response(
        "Cluster state (Table or Queue storage) did not answer in time; `Retry-After` says when to try again",
        "Problem",
        PROBLEM,
    )
    unavailable["headers"] = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
    failed = _response("An unexpected error; the detail is in the app's log, not here", "Problem", PROBLEM)
    no_function_key = _response("No valid function key (answered by the Functions host, not by this app)")
    common = {"500": failed, "503": unavailable}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Ray serverless autoscaler for Azure",
            "version": API_VERSION,
            "description": "Create, inspect and destroy Ray clusters whose autoscaler runs in Azure Functions.",
        },
        "servers": [{"url": "/api"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "clusterToken": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"functionKey": []}],
        "paths": {
            "/clusters": {
                "post": {
                    "operationId": "createCluster",
                    "summary": "Create a cluster from a Ray cluster config (YAML or JSON)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _ref("ClusterConfig")},
                            "application/yaml": {"schema": _ref("ClusterConfig")},
                        },
                    },
                    "responses": {
                        "202": _response("Accepted; Location points at the cluster", "CreateResponse"),
                        "400": _response(
                            "Invalid config, or one this deployment cannot run (e.g. no subscription for an Azure "
                            "cluster: `provider.subscription_id`); `errors` names every failing field",
                            "Problem",
                            PROBLEM,
                        ),
                        "401": no_function_key,
                        "409": _response("A cluster of that name exists with another config", "Problem", PROBLEM),
                        "413": _response("The config is too large", "Problem", PROBLEM),
                        **common,
                    },
                },
                "get": {
                    "operationId": "listClusters",
                    "responses": {"200": _response("Every cluster", "ClusterList"), "401": no_function_key, **common},
                },
            },
            "/clusters/{name}": {
                "parameters": [name_param],
                "get": {
                    "operationId": "getCluster",
                    "responses": {
                        "200": _response("Status, head, nodes, decision, events, failures", "ClusterView"),
                        "401": no_function_key,
                        "404": not_found,
                        **common,
                    },
                },
                "put": {
                    "operationId": "updateCluster",
                    "summary": "Apply a new config to an existing cluster",
                    "description": "Limits and node types change on the next tick; workers whose node config "
                    "changed are replaced once idle. A change of the head (head_node_type, or what the head VM is "
                    "made of) is refused with 409. The same config again changes nothing.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _ref("ClusterConfig")},
                            "application/yaml": {"schema": _ref("ClusterConfig")},
                        },
                    },
                    "responses": {
                        "202": _response("Accepted: applied on the next tick", "UpdateResponse"),
                        "400": _response(
                            "Invalid config (the same rules as the create), or one naming another cluster; "
                            "`errors` names every failing field",
                            "Problem",
                            PROBLEM,
                        ),
                        "401": no_function_key,
                        "404": not_found,
                        "409": _response(
                            "The update changes the head, the cluster is being deleted, or it kept changing",
                            "Problem",
                            PROBLEM,
                        ),
                        "413": _response("The config is too large", "Problem", PROBLEM),
                        **common,
                    },
                },
                "delete": {
                    "operationId": "destroyCluster",
                    "responses": {
                        "202": _response(
                            "Destroy accepted; `status` is `deleted` at once when nothing was created in the cloud",
                            "AcceptedResponse",
                        ),
                        "401": no_function_key,
                        "404": not_found,
                        "409": keeps_changing,
                        **common,
                    },
                },
            },
            "/clusters/{name}/start": {
                "parameters": [name_param],
                "post": {
                    "operationId": "startCluster",
                    "summary": "Start a cluster that autostop stopped (its head, then its min_workers)",
                    "responses": {
                        "202": _response(
                            "Starting (status `creating`), or nothing to do when it is creating or running",
                            "AcceptedResponse",
                        ),
                        "401": no_function_key,
                        "404": not_found,
                        "409": _response(
                            "The cluster is still stopping, is being deleted or failed, or kept changing",
                            "Problem",
                            PROBLEM,
                        ),
                        **common,
                    },
                },
            },
            "/clusters/{name}/timeline.svg": {
                "parameters": [name_param],
                "get": {
                    "operationId": "clusterTimeline",
                    "summary": "Nodes by status and pending demand over the last hours, as an SVG image",
                    "parameters": [
                        {
                            "name": "hours",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "number", "default": 6, "minimum": 0.05, "maximum": 168},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "An SVG document: one step line per node status and pending demand",
                            "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                        },
                        "400": _response("`hours` is not a number in range", "Problem", PROBLEM),
                        "401": no_function_key,
                        "404": not_found,
                        **common,
                    },
                },
            },
            "/clusters/{name}/reconcile": {
                "parameters": [name_param],
                "post": {
                    "operationId": "requestReconcile",
                    "summary": "Wake the autoscaler for this cluster (the head agent's call)",
                    "security": [{"clusterToken": []}],
                    "requestBody": {"content": {"application/json": {"schema": _ref("WakeRequest")}}},
                    "description": "The token is checked first (401, 403), then the body (400).",
                    "responses": {
                        "202": _response("Reconciled, or queued", "AcceptedResponse"),
                        "400": invalid,
                        "401": _response("No bearer token", "Problem", PROBLEM),
                        "403": _response("Not this cluster's token (or no such cluster)", "Problem", PROBLEM),
                        "404": _response("Not a valid cluster name", "Problem", PROBLEM),
                        **common,
                    },
                },
            },
            "/health": {
                "get": {"operationId": "health", "security": [], "responses": {"200": _response("OK", "Health")}}
            },
            "/openapi.json": {
                "get": {"operationId": "openapi", "security": [], "responses": {"200": _response("This document")}}
            },
        },
    }


def _provider_union(schemas: dict[str, Any]) -> None:
    """The config's `provider` is one of the registered plugins' models, selected by `type` (autoscaler/plugins.py):
    the document says so with a discriminated `oneOf` instead of the bare base model the core declares."""
    from autoscaler.plugins import providers

    mapping: dict[str, str] = {}
    for plugin in providers().plugins():
        schema = plugin.config_model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        name = plugin.config_model.__name__
        schemas[name] = schema
        mapping[plugin.type] = f"#/components/schemas/{name}"
    if mapping:
        schemas["ClusterConfig"]["properties"]["provider"] = {
            "oneOf": [{"$ref": ref} for ref in mapping.values()],
            "discriminator": {"propertyName": "type", "mapping": mapping},
        }
        schemas.pop("ProviderConfig", None)
