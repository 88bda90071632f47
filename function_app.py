"""Azure Functions entry points (Python v2 programming model). Triggers only: parse, call the service, map errors.

Importing this module must stay cheap (cold start on Flex Consumption): the service, the storage SDKs and the Azure
management SDKs are built on first use, not at import.
"""

from __future__ import annotations

import json
import logging
import os
from functools import cache
from typing import TYPE_CHECKING, Any

import azure.functions as func
from pydantic import BaseModel, ValidationError

from autoscaler.settings import DEFAULT_RECONCILE_SCHEDULE, POISON_QUEUE, RECONCILE_QUEUE

if TYPE_CHECKING:
    from autoscaler.service import Service, ServiceError

# The real host resolves %RECONCILE_SCHEDULE% from the app settings (set by infra/ and local.settings.json); this
# default only helps hosts that read the worker's environment, like the local host under local/.
os.environ.setdefault("RECONCILE_SCHEDULE", DEFAULT_RECONCILE_SCHEDULE)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("function_app")

PROBLEM_JSON = "application/problem+json"


@cache
def _service() -> Service:
    from autoscaler.wiring import build_service

    return build_service()


def _json(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        model.model_dump_json(), status_code=status, mimetype="application/json", headers=headers or {}
    )


_INTERNAL_ERROR = (500, "Internal error")


@cache
def _problem_kinds() -> tuple[tuple[type[ServiceError], int, str], ...]:
    """How each domain error of the service is answered: its status and problem title, the most specific kind first.
    This module alone speaks HTTP; the service raises what went wrong in its own terms (autoscaler/service.py).
    Imported on first use, like the service, so that importing this module stays cheap."""
    from autoscaler import service

    return (
        (service.InvalidRequest, 400, "Invalid request"),
        (service.Unauthorized, 401, "Missing credentials"),
        (service.Forbidden, 403, "Wrong credentials"),
        (service.ClusterNotFound, 404, "Cluster not found"),
        (service.NotFound, 404, "Not found"),
        (service.Conflict, 409, "Conflict"),
        (service.PayloadTooLarge, 413, "Payload too large"),
        (service.StorageUnavailable, 503, "Storage unavailable"),
    )


def _problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> func.HttpResponse:
    """The one place a problem+json answer (RFC 9457) is built."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "errors": errors or []}
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype=PROBLEM_JSON, headers=headers or {})


def _service_problem(error: ServiceError) -> func.HttpResponse:
    from autoscaler.service import StorageUnavailable

    status, title = next(
        ((status, title) for kind, status, title in _problem_kinds() if isinstance(error, kind)), _INTERNAL_ERROR
    )
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, StorageUnavailable) else {}
    errors = [{"field": e.path, "message": e.message} for e in error.errors]
    return _problem(status, title, error.detail, errors, headers)


def _handle(call: Any) -> func.HttpResponse:
    """Run one handler body, turning domain errors into problem responses (never a stack trace to the caller)."""
    from autoscaler.service import ServiceError

    try:
        response: func.HttpResponse = call()
    except ServiceError as error:
        return _service_problem(error)
    except Exception:
        # A bug: the caller gets problem JSON without the detail, the log gets the traceback.
        log.exception("unhandled error in an HTTP function")
        return _problem(*_INTERNAL_ERROR, "an unexpected error occurred; it is logged")
    return response


def _checked_name(req: func.HttpRequest) -> str:
    from autoscaler.config import CLUSTER_NAME_RULE, is_valid_cluster_name
    from autoscaler.service import ClusterNotFound

    name = str(req.route_params.get("name", ""))
    if not is_valid_cluster_name(name):
        raise ClusterNotFound(f"no cluster named {name!r} (cluster names: {CLUSTER_NAME_RULE})")
    return name


# -- HTTP -------------------------------------------------------------------------------------------------------------


@app.function_name(name="create_cluster")
@app.route(route="clusters", methods=["POST"])
def create_cluster(req: func.HttpRequest) -> func.HttpResponse:
    def run() -> func.HttpResponse:
        created = _service().create_cluster(req.get_body(), req.headers.get("content-type"))
        return _json(created, status=202, headers={"Location": created.location})

    return _handle(run)


@app.function_name(name="list_clusters")
@app.route(route="clusters", methods=["GET"])
def list_clusters(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(lambda: _json(_service().list_clusters()))


@app.function_name(name="get_cluster")
@app.route(route="clusters/{name}", methods=["GET"])
def get_cluster(req: func.HttpRequest) -> func.HttpResponse:
    return _handle(lambda: _json(_service().get_cluster(_checked_name(req))))


@app.function_name(name="update_cluster")
@app.route(route="clusters/{name}", methods=["PUT"])
def update_cluster(req: func.HttpRequest) -> func.HttpResponse:
    def run() -> func.HttpResponse:
        name = _checked_name(req)
        updated = _service().update_cluster(name, req.get_body(), req.headers.get("content-type"))
        return _json(updated, status=202, headers={"Location": _service().location(name)})

    return _handle(run)


@app.function_name(name="cluster_timeline")
@app.route(route="clusters/{name}/timeline.svg", methods=["GET"])
def cluster_timeline(req: func.HttpRequest) -> func.HttpResponse:
    def run() -> func.HttpResponse:
        from autoscaler.config import FieldError
        from autoscaler.service import InvalidRequest

        name = _checked_name(req)
        raw = req.params.get("hours")
        try:
            hours = float(raw) if raw is not None else None
        except ValueError:
            raise InvalidRequest("hours must be a number", [FieldError("hours", "must be a number")]) from None
        service = _service()
        svg = service.timeline_svg(name) if hours is None else service.timeline_svg(name, hours=hours)
        return func.HttpResponse(svg, status_code=200, mimetype="image/svg+xml")

    return _handle(run)


@app.function_name(name="start_cluster")
@app.route(route="clusters/{name}/start", methods=["POST"])
def start_cluster(req: func.HttpRequest) -> func.HttpResponse:
    def run() -> func.HttpResponse:
        name = _checked_name(req)
        accepted = _service().start_cluster(name)
        return _json(accepted, status=202, headers={"Location": _service().location(name)})

    return _handle(run)


@app.function_name(name="destroy_cluster")
@app.route(route="clusters/{name}", methods=["DELETE"])
def destroy_cluster(req: func.HttpRequest) -> func.HttpResponse:
    def run() -> func.HttpResponse:
        name = _checked_name(req)
        accepted = _service().destroy_cluster(name)
        return _json(accepted, status=202, headers={"Location": _service().location(name)})

    return _handle(run)


# The head agent calls this with its cluster token, which only lets it wake its own cluster; the host-level key would
# give it every route, so the route is anonymous at the host and checks the bearer token itself.
@app.function_name(name="request_reconcile")
@app.route(
    route="clusters/{name}/reconcile",
    methods=["POST"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
def request_reconcile(req: func.HttpRequest) -> func.HttpResponse:
    def run() -> func.HttpResponse:
        name = _checked_name(req)
        # The service checks the token before the body: a caller without the token learns nothing from the body.
        accepted = _service().request_reconcile(name, req.headers.get("authorization"), body=req.get_body())
        return _json(accepted, status=202)

    return _handle(run)


@app.function_name(name="health")
@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    from autoscaler.openapi import API_VERSION
    from autoscaler.views import Health

    return _json(Health(version=API_VERSION))


@app.function_name(name="openapi")
@app.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    from autoscaler.openapi import openapi_document

    return func.HttpResponse(json.dumps(openapi_document()), mimetype="application/json")


# -- Timer and queues -------------------------------------------------------------------------------------------------


@app.function_name(name="reconcile_timer")
@app.timer_trigger(schedule="%RECONCILE_SCHEDULE%", arg_name="timer", run_on_startup=False)
def reconcile_timer(timer: func.TimerRequest) -> None:
    from autoscaler.ports import StorageUnavailableError

    try:
        count = _service().enqueue_active()
    except StorageUnavailableError as error:
        # The next run (15 s later) fans out again; there is nothing to retry now.
        log.warning("timer: storage unavailable, no reconcile queued this time: %s", error)
        return
    log.info("timer: queued a reconcile for %d active cluster(s)%s", count, " (past due)" if timer.past_due else "")


@app.function_name(name="reconcile_worker")
@app.queue_trigger(arg_name="msg", queue_name=RECONCILE_QUEUE, connection="AzureWebJobsStorage")
def reconcile_worker(msg: func.QueueMessage) -> None:
    from autoscaler.views import ReconcileMessage

    try:
        message = ReconcileMessage.model_validate_json(msg.get_body())
    except ValidationError:
        # Retrying cannot fix a malformed message: raising sends it to the poison queue, where it is recorded.
        log.error("malformed reconcile message %s: %.300r", msg.id, msg.get_body())
        raise
    _service().tick(message)


@app.function_name(name="reconcile_poison")
@app.queue_trigger(arg_name="msg", queue_name=POISON_QUEUE, connection="AzureWebJobsStorage")
def reconcile_poison(msg: func.QueueMessage) -> None:
    _service().record_poison(msg.get_body().decode("utf-8", "replace"))
