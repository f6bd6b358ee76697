"""Deploy and undeploy requests, deployments, and servers.

Deploys run the real reconciler (CELERY_TASK_ALWAYS_EAGER) against a server
nothing listens on: the request answers 202 at once, and the deployment then
shows the failure naming the server. Deploys to a real Triton are tested in
tests/serving/.
"""

import pytest

from modelhub.audit.models import AuditEvent
from modelhub.serving.models import Deployment, InferenceServer
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


def test_deploy_answers_202_and_the_deployment_shows_what_went_wrong(
    admin_api, registered, dead_server, django_capture_on_commit_callbacks
):
    registered("digits")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.post("/api/v1/models/digits/versions/1/deploy/", {"server": "dead"}, format="json")
    assert response.status_code == 202, response.json()
    (deployment,) = response.json()["deployments"]
    assert (deployment["model"], deployment["version"], deployment["server"]) == ("digits", 1, "dead")
    assert deployment["desired"] == "loaded"

    detail = admin_api.get(deployment["url"]).json()
    assert detail["desired"] == "loaded"
    assert detail["observed"] == "failed"
    assert "Triton server 'dead'" in detail["last_error"]
    assert detail["converged"] is False
    assert [(t["from_state"], t["to_state"]) for t in detail["transitions"]] == [("pending", "failed")]
    assert "Triton server 'dead'" in detail["transitions"][0]["error"]
    event = AuditEvent.objects.get(action="deployment.deploy")
    assert (event.actor, event.source) == ("token:ci", "api")


def test_undeploy_sets_desired_unloaded(admin_api, registered, dead_server):
    registered("digits")
    admin_api.post("/api/v1/models/digits/versions/1/deploy/", {"server": "dead"}, format="json")
    response = admin_api.post("/api/v1/models/digits/versions/1/undeploy/", {"server": "dead"}, format="json")
    assert response.status_code == 202
    assert response.json()["deployments"][0]["desired"] == "unloaded"
    assert Deployment.objects.get().desired == "unloaded"


def test_deploy_by_label_reaches_every_enabled_server_with_it(admin_api, registered, dead_server):
    registered("digits")
    InferenceServer.objects.create(name="dead-2", base_url="http://127.0.0.1:9", labels=["staging", "gpu"])
    InferenceServer.objects.create(name="off", base_url="http://127.0.0.1:9", labels=["staging"], enabled=False)
    InferenceServer.objects.create(name="prod", base_url="http://127.0.0.1:9", labels=["production"])
    response = admin_api.post("/api/v1/models/digits/versions/1/deploy/", {"label": "staging"}, format="json")
    assert response.status_code == 202
    assert sorted(d["server"] for d in response.json()["deployments"]) == ["dead", "dead-2"]


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({"server": "ghost"}, "server", "unknown server 'ghost'"),
        ({"server": "BAD NAME"}, "server", "unknown server 'BAD NAME'"),
        ({"server": "off"}, "server", "server 'off' is disabled"),
        ({"label": "nowhere"}, "label", "no enabled server has the label 'nowhere'"),
    ],
)
def test_deploy_to_an_unknown_server_is_400_naming_it(admin_api, registered, body, field, message):
    registered("digits")
    InferenceServer.objects.create(name="off", base_url="http://127.0.0.1:9", enabled=False)
    response = admin_api.post("/api/v1/models/digits/versions/1/deploy/", body, format="json")
    assert response.status_code == 400
    assert error_of(response)["fields"][field] == message
    assert not Deployment.objects.exists()


@pytest.mark.parametrize("body", [{}, {"server": "dead", "label": "staging"}, {"server": 5}])
def test_deploy_needs_exactly_one_server_or_label(admin_api, registered, dead_server, body):
    registered("digits")
    response = admin_api.post("/api/v1/models/digits/versions/1/deploy/", body, format="json")
    assert response.status_code == 400
    assert error_of(response)["message"]


def test_deploy_of_a_missing_version_is_404(admin_api, registered, dead_server):
    registered("digits")
    for number in ("2", "0", "99999999999"):
        response = admin_api.post(f"/api/v1/models/digits/versions/{number}/deploy/", {"server": "dead"}, format="json")
        assert response.status_code == 404


def test_deployments_list_filters_by_model_server_and_state(admin_api, registered, dead_server):
    registered("digits", versions=2)
    registered("faces")
    InferenceServer.objects.create(name="other", base_url="http://127.0.0.1:9")
    admin_api.post("/api/v1/models/digits/versions/1/deploy/", {"server": "dead"}, format="json")
    admin_api.post("/api/v1/models/digits/versions/2/deploy/", {"server": "other"}, format="json")
    admin_api.post("/api/v1/models/faces/versions/1/deploy/", {"server": "dead"}, format="json")
    admin_api.post("/api/v1/models/faces/versions/1/undeploy/", {"server": "dead"}, format="json")

    def listed(query: str) -> list[tuple]:
        rows = admin_api.get(f"/api/v1/deployments/?{query}").json()["results"]
        return sorted((d["model"], d["version"], d["server"]) for d in rows)

    assert len(listed("")) == 3
    assert listed("model=digits") == [("digits", 1, "dead"), ("digits", 2, "other")]
    assert listed("server=dead") == [("digits", 1, "dead"), ("faces", 1, "dead")]
    assert listed("desired=unloaded") == [("faces", 1, "dead")]
    assert listed("observed=pending&model=digits&version=2") == [("digits", 2, "other")]
    assert listed("ordering=id&limit=1") == [("digits", 1, "dead")]
    assert admin_api.get("/api/v1/deployments/?desired=sideways").status_code == 400
    assert admin_api.get("/api/v1/deployments/?observed=").status_code == 400  # given empty is not "any"


def test_deployment_detail_of_unknown_id_is_404(admin_api):
    assert admin_api.get("/api/v1/deployments/424242/").status_code == 404


# --- servers ---------------------------------------------------------------------------


def test_servers_list_create_read_update(admin_api):
    response = admin_api.post(
        "/api/v1/servers/",
        {"name": "triton-a", "base_url": "http://triton-a:8000", "labels": ["staging"], "backends": ["python"]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response["Location"].endswith("/api/v1/servers/triton-a/")
    assert response.json()["enabled"] is True and response.json()["live"] is None
    response = admin_api.patch("/api/v1/servers/triton-a/", {"labels": ["production"], "enabled": False}, format="json")
    assert response.status_code == 200
    assert response.json()["labels"] == ["production"]
    assert admin_api.get("/api/v1/servers/triton-a/").json()["enabled"] is False
    assert [s["name"] for s in admin_api.get("/api/v1/servers/?label=production").json()["results"]] == ["triton-a"]
    assert admin_api.get("/api/v1/servers/?enabled=true").json()["count"] == 0
    actions = sorted(AuditEvent.objects.filter(object_type="serving.inferenceserver").values_list("action", flat=True))
    assert actions == ["inferenceserver.create", "inferenceserver.update"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "x", "base_url": "ftp://x"}, "base_url"),
        ({"name": "x", "base_url": "http://x:99999"}, "base_url"),
        ({"name": "x", "base_url": "not a url"}, "base_url"),
        ({"name": "X Y", "base_url": "http://x"}, "name"),
        ({"name": "x", "base_url": "http://x", "enabled": "yes"}, "enabled"),
        ({"name": "x", "base_url": "http://x", "labels": "staging"}, "labels"),
        ({"name": "x", "base_url": "http://x", "labels": ["a\x00b"]}, "labels.0"),
    ],
)
def test_invalid_server_fields_are_400(admin_api, body, field):
    response = admin_api.post("/api/v1/servers/", body, format="json")
    assert response.status_code == 400
    assert field in error_of(response)["fields"]


def test_a_taken_server_name_is_409(admin_api, dead_server):
    response = admin_api.post("/api/v1/servers/", {"name": "dead", "base_url": "http://x"}, format="json")
    assert response.status_code == 409
    InferenceServer.objects.create(name="other", base_url="http://127.0.0.1:9")
    assert admin_api.patch("/api/v1/servers/other/", {"name": "dead"}, format="json").status_code == 409


# Deleting servers (refused while anything is meant to be loaded on them): tests/api/test_deletes.py.
