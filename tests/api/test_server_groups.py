"""/api/v1/server-groups/: DNS names standing for several servers, and what the API shows of
discovered and drained servers (who may call what is in test_permission_matrix)."""

import pytest

from modelhub.audit.models import AuditEvent
from modelhub.registry.services import get_or_create_model, register_version
from modelhub.serving.discovery import sync_group
from modelhub.serving.models import Deployment, ObservedState, ServerGroup
from modelhub.serving.services import request_deploy, servers_with_label
from tests.api.conftest import error_of
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip

pytestmark = pytest.mark.django_db

GROUP = {"name": "fleet", "dns_name": "triton.models.svc.cluster.local", "labels": ["gpu"], "metrics_port": 8002}


def test_a_group_is_created_with_its_defaults_and_resolved_once_it_commits(
    admin_api, django_capture_on_commit_callbacks, monkeypatch
):
    asked = []
    monkeypatch.setattr(
        "modelhub.serving.discovery.resolve", lambda name, port: asked.append((name, port)) or ["10.0.0.1"]
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.post("/api/v1/server-groups/", GROUP, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert response["Location"] == body["url"] == "http://testserver/api/v1/server-groups/fleet/"
    assert (body["scheme"], body["port"], body["interval_s"], body["enabled"]) == ("http", 8000, 30, True)
    assert asked == [("triton.models.svc.cluster.local", 8000)]  # the discovery task ran on commit
    event = AuditEvent.objects.get(action="servergroup.create")
    assert event.source == "api" and event.details == {"dns_name": "triton.models.svc.cluster.local"}

    detail = admin_api.get("/api/v1/server-groups/fleet/").json()
    assert detail["addresses"] == ["10.0.0.1"]
    (member,) = detail["servers"]
    assert (member["name"], member["address"], member["drained_at"]) == ("fleet-10.0.0.1", "10.0.0.1", None)
    server = admin_api.get(member["url"]).json()
    assert (server["group"], server["address"], server["labels"]) == ("fleet", "10.0.0.1", ["gpu"])
    assert server["metrics_url"] == "http://10.0.0.1:8002/metrics"


@pytest.mark.parametrize(
    "body, field",
    [
        ({**GROUP, "dns_name": "-bad-.example"}, "dns_name"),
        ({**GROUP, "dns_name": "has space.example"}, "dns_name"),
        ({**GROUP, "port": 0}, "port"),
        ({**GROUP, "port": "8000"}, "port"),
        ({**GROUP, "interval_s": 1}, "interval_s"),
        ({**GROUP, "scheme": "ftp"}, "scheme"),
        ({**GROUP, "name": "Fleet"}, "name"),
        ({**GROUP, "name": "f" * 51}, "name"),
    ],
)
def test_a_bad_group_is_400_naming_the_field(admin_api, body, field):
    response = admin_api.post("/api/v1/server-groups/", body, format="json")
    assert response.status_code == 400
    assert field in error_of(response)["fields"]
    assert not ServerGroup.objects.exists()


def test_a_taken_name_is_409(admin_api):
    ServerGroup.objects.create(name="fleet", dns_name="other.example")
    response = admin_api.post("/api/v1/server-groups/", GROUP, format="json")
    assert response.status_code == 409
    assert "a server group named 'fleet' already exists" in error_of(response)["message"]


def test_a_drained_server_and_its_deployments_say_drained(admin_api, tmp_path, actor):
    group = ServerGroup.objects.create(name="fleet", dns_name="triton.example", labels=["gpu"])
    sync_group(group.pk, lambda name, port: ["10.0.0.1", "10.0.0.2"])
    model = get_or_create_model("digits", actor)
    artifact = make_zip(tmp_path / "d.zip", {"1/model.py": doubler_source(2)})
    version = register_version(model, artifact, DOUBLER_MANIFEST, actor).version
    request_deploy(version, servers_with_label("gpu"), actor)
    Deployment.objects.update(observed=ObservedState.LOADED)

    sync_group(group.pk, lambda name, port: ["10.0.0.1"])

    server = admin_api.get("/api/v1/servers/fleet-10.0.0.2/").json()
    assert server["drained_at"] is not None and server["live"] is False
    drained = admin_api.get("/api/v1/deployments/?observed=drained").json()["results"]
    assert [(d["server"], d["desired"], d["observed"]) for d in drained] == [("fleet-10.0.0.2", "loaded", "drained")]
    assert "left triton.example" in drained[0]["last_error"]
    members = {m["name"]: m["drained_at"] for m in admin_api.get("/api/v1/server-groups/fleet/").json()["servers"]}
    assert members["fleet-10.0.0.1"] is None and members["fleet-10.0.0.2"] is not None
    # "Check now" does not call a host that is gone either.
    check = admin_api.post("/api/v1/servers/fleet-10.0.0.2/check/", format="json")
    assert check.status_code == 409
    assert "server 'fleet-10.0.0.2' is drained" in error_of(check)["message"]


def test_a_group_with_servers_is_409_on_delete_and_an_empty_one_goes(admin_api):
    group = ServerGroup.objects.create(name="fleet", dns_name="triton.example")
    sync_group(group.pk, lambda name, port: ["10.0.0.1"])
    response = admin_api.delete("/api/v1/server-groups/fleet/")
    assert response.status_code == 409
    assert "server group 'fleet' has servers: fleet-10.0.0.1" in error_of(response)["message"]

    ServerGroup.objects.create(name="empty", dns_name="nothing.example")
    assert admin_api.delete("/api/v1/server-groups/empty/").status_code == 204
    assert AuditEvent.objects.filter(action="servergroup.delete").count() == 1


def test_an_update_is_audited_and_resolved_again(admin_api, django_capture_on_commit_callbacks, monkeypatch):
    ServerGroup.objects.create(name="fleet", dns_name="triton.example")
    asked = []
    monkeypatch.setattr("modelhub.serving.discovery.resolve", lambda name, port: asked.append(port) or [])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.patch("/api/v1/server-groups/fleet/", {"port": 9000}, format="json")
    assert response.status_code == 200 and response.json()["port"] == 9000
    assert asked == [9000]
    assert AuditEvent.objects.get(action="servergroup.update").details == {"fields": ["port"]}
