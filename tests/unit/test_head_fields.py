"""GET /api/clusters/{name} shows the head's public IP and cloud instance id once the cloud lists them."""

from __future__ import annotations

from dataclasses import replace

from autoscaler.views import ReconcileMessage
from tests.support.fakes import FakeCloudProvider
from tests.unit.test_service import App
from tests.unit.test_update import running


def test_the_head_shows_its_public_ip_and_vm_id_when_known():
    cloud = FakeCloudProvider()
    app = App(provider_for=cloud)
    running(app)
    head = next(r for r in app.store.list_instances("upd") if r.is_head)
    view = app.service.get_cluster("upd")
    assert view.head.vm_id == f"fake-{head.instance_id}"
    assert view.head.public_ip == ""
    key = ("upd", head.instance_id)
    cloud.instances[key] = replace(cloud.instances[key], public_ip="20.1.2.3")
    app.service.tick(ReconcileMessage(cluster_name="upd"))
    assert app.service.get_cluster("upd").head.public_ip == "20.1.2.3"
