"""GET /api/clusters/{name}/timeline.svg: a well-formed SVG with a series per node status seen and pending demand."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import timedelta

import azure.functions as func
import pytest

import function_app
from autoscaler.model import RayState, ShapeDemand
from autoscaler.service import ClusterNotFound, InvalidRequest
from autoscaler.views import ReconcileMessage
from tests.unit.test_service import App
from tests.unit.test_update import running

SVG = "{http://www.w3.org/2000/svg}"


def series_of(svg: str) -> dict[str, str]:
    root = ET.fromstring(svg)  # noqa: S314 - our own document, in a test
    assert root.tag == f"{SVG}svg"
    return {g.attrib["data-series"]: g.attrib["data-latest"] for g in root.iter(f"{SVG}g")}


def test_the_timeline_draws_nodes_by_status_and_pending_demand():
    app = App()
    running(app)  # a head and two workers running Ray
    app.now += timedelta(minutes=5)
    app.ray.state = RayState(nodes=app.ray.state.nodes, pending=(ShapeDemand((("CPU", 1.0),), 4),))
    app.service.tick(ReconcileMessage(cluster_name="upd"))
    assert any(e.kind == "demand" and "4 bundle" in e.message for e in app.store.list_events("upd"))
    app.now += timedelta(minutes=5)
    series = series_of(app.service.timeline_svg("upd"))
    assert series["pending_demand"] == "4"
    assert int(series["ray_running"]) >= 3
    assert "requested" in series  # the demand launched a worker
    assert "terminated" not in series  # final statuses are not drawn


def test_an_unknown_cluster_or_a_bad_window_is_refused():
    app = App()
    with pytest.raises(ClusterNotFound):
        app.service.timeline_svg("nope")
    running(app)
    with pytest.raises(InvalidRequest) as refused:
        app.service.timeline_svg("upd", hours=10_000)
    assert [e.path for e in refused.value.errors] == ["hours"]


def test_the_handler_answers_image_svg_xml_or_a_cluster_not_found_problem(monkeypatch: pytest.MonkeyPatch):
    app = App()
    running(app)
    monkeypatch.setattr(function_app, "_service", lambda: app.service)

    def get(name: str, **params: str) -> func.HttpResponse:
        request = func.HttpRequest("GET", "/", headers={}, route_params={"name": name}, params=params, body=b"")
        answer: func.HttpResponse = function_app.cluster_timeline(request)
        return answer

    answer = get("upd", hours="2")
    assert (answer.status_code, answer.mimetype) == (200, "image/svg+xml")
    assert "ray_running" in series_of(answer.get_body().decode())
    missing = get("nope")
    assert (missing.status_code, missing.mimetype) == (404, "application/problem+json")
    assert json.loads(missing.get_body())["title"] == "Cluster not found"
