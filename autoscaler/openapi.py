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
        WakeRequest,
    )

    models: list[type[BaseModel]] = [
        ClusterConfig,
        CreateResponse,
        ClusterList,
        ClusterView,
        AcceptedResponse,
        WakeRequest,
        Health,
        Problem,
    ]
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    problems = {
        "400": _response("Invalid input; `errors` names every failing field", "Problem", PROBLEM),
        "404": _response("No such cluster", "Problem", PROBLEM),
    }
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
                        "400": problems["400"],
                        "409": _response("A cluster of that name exists with another config", "Problem", PROBLEM),
                        "413": _response("The config is too large", "Problem", PROBLEM),
                    },
                },
                "get": {
                    "operationId": "listClusters",
                    "responses": {"200": _response("Every cluster", "ClusterList")},
                },
            },
            "/clusters/{name}": {
                "parameters": [name_param],
                "get": {
                    "operationId": "getCluster",
                    "responses": {"200": _response("Status, head, nodes, decision, events", "ClusterView"), **problems},
                },
                "delete": {
                    "operationId": "destroyCluster",
                    "responses": {"202": _response("Destroy accepted", "AcceptedResponse"), **problems},
                },
            },
            "/clusters/{name}/reconcile": {
                "parameters": [name_param],
                "post": {
                    "operationId": "requestReconcile",
                    "summary": "Wake the autoscaler for this cluster (the head agent's call)",
                    "security": [{"clusterToken": []}],
                    "requestBody": {"content": {"application/json": {"schema": _ref("WakeRequest")}}},
                    "responses": {
                        "202": _response("Reconcile queued", "AcceptedResponse"),
                        "401": _response("No bearer token", "Problem", PROBLEM),
                        "403": _response("Not this cluster's token", "Problem", PROBLEM),
                        "404": problems["404"],
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
