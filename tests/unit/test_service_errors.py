"""The service speaks the domain (typed errors, no HTTP statuses); function_app.py alone answers them as problem+json,
building every problem body in one place."""

from __future__ import annotations

import json

import pytest

import function_app
from autoscaler import service
from autoscaler.config import FieldError

KINDS = [
    (service.InvalidRequest, 400, "Invalid request"),
    (service.Unauthorized, 401, "Missing credentials"),
    (service.Forbidden, 403, "Wrong credentials"),
    (service.ClusterNotFound, 404, "Cluster not found"),
    (service.NotFound, 404, "Not found"),
    (service.ClusterConflict, 409, "Conflict"),
    (service.Conflict, 409, "Conflict"),
    (service.PayloadTooLarge, 413, "Payload too large"),
    (service.StorageUnavailable, 503, "Storage unavailable"),
]


def test_service_errors_carry_no_http_status_or_title():
    for kind, _, _ in KINDS:
        assert not hasattr(kind, "status")
        assert not hasattr(kind, "title")
    assert not hasattr(service, "problem_body")


@pytest.mark.parametrize(("kind", "status", "title"), KINDS, ids=[kind.__name__ for kind, _, _ in KINDS])
def test_function_app_answers_each_kind_with_its_status_and_title(
    kind: type[service.ServiceError], status: int, title: str
):
    error = kind("what went wrong", [FieldError("provider.type", "unknown")])
    response = function_app._handle(lambda: (_ for _ in ()).throw(error))
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert json.loads(response.get_body()) == {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": "what went wrong",
        "errors": [{"field": "provider.type", "message": "unknown"}],
    }
    retry_after = response.headers.get("Retry-After")
    assert retry_after == ("10" if kind is service.StorageUnavailable else None)


def test_a_service_error_of_a_kind_without_an_answer_is_a_500_and_a_bug_is_a_500_without_its_detail():
    class Unmapped(service.ServiceError):
        pass

    assert function_app._handle(lambda: (_ for _ in ()).throw(Unmapped("odd"))).status_code == 500
    bug = function_app._handle(lambda: 1 / 0)
    assert bug.status_code == 500
    assert json.loads(bug.get_body())["detail"] == "an unexpected error occurred; it is logged"
