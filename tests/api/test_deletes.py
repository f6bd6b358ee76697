"""Deleting versions and servers over the API: refused while something would be stranded.

A version deployed (desired or observed loaded) or behind an alias answers 409
naming where; a server with deployments meant to be loaded answers 409 naming
them. What is deleted leaves no file, and no empty model folder, behind.
"""

import pytest
import tritonclient.http as triton_http

from modelhub.audit.models import AuditEvent
from modelhub.registry.models import AliasMove, Model, ModelVersion, TensorSpec
from modelhub.registry.services import InUse, get_or_create_model, register_version
from modelhub.serving.models import Deployment, DeploymentTransition, InferenceServer
from modelhub.serving.services import delete_server, delete_version, request_deploy, request_undeploy
from tests.api.conftest import error_of, files_under

pytestmark = pytest.mark.django_db


def deploy(client, number: int, server: str = "dead", model: str = "digits", undeploy: bool = False):
    verb = "undeploy" if undeploy else "deploy"
    response = client.post(f"/api/v1/models/{model}/versions/{number}/{verb}/", {"server": server}, format="json")
    assert response.status_code == 202, response.json()


# --- versions -----------------------------------------------------------------


def test_deleting_a_version_removes_its_row_schema_and_file_once_committed(
    admin_api, registered, isolated_storage, django_capture_on_commit_callbacks
):
    model = registered("digits", versions=2)
    kept = model.versions.get(number=1)
    gone = model.versions.get(number=2)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.delete("/api/v1/models/digits/versions/2/")
    assert response.status_code == 204, response.content
    assert list(model.versions.values_list("number", flat=True)) == [1]
    assert not TensorSpec.objects.filter(version_id=gone.pk).exists()
    assert files_under(isolated_storage / "media") == [kept.artifact.name]
    event = AuditEvent.objects.get(action="version.delete")
    assert (event.actor, event.source, event.object_id) == ("token:ci", "api", str(gone.pk))
    assert event.details["sha256"] == gone.sha256
    assert admin_api.get("/api/v1/models/digits/versions/2/").status_code == 404


def test_a_deleted_versions_number_is_never_given_out_again(admin_api, registered, doubler_artifact, doubler_manifest):
    from tests.api.conftest import upload

    registered("digits", versions=2)
    assert admin_api.delete("/api/v1/models/digits/versions/2/").status_code == 204
    response = upload(admin_api, "digits", doubler_artifact(factor=9), doubler_manifest)
    assert response.status_code == 201, response.json()
    # "v2" in a CI log or an audit row keeps meaning the deleted bytes.
    assert response.json()["number"] == 3


def test_deleting_a_models_last_version_removes_its_empty_folder(
    admin_api, registered, isolated_storage, django_capture_on_commit_callbacks
):
    registered("digits")
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_api.delete("/api/v1/models/digits/versions/1/").status_code == 204
    assert not (isolated_storage / "media" / "digits").exists()
    assert (isolated_storage / "media").is_dir()  # the storage root itself stays
    assert Model.objects.filter(name="digits").exists()  # a model may have no version


def test_deleting_a_model_removes_its_empty_folder(
    admin_api, registered, isolated_storage, django_capture_on_commit_callbacks
):
    registered("digits", versions=2)
    registered("faces")
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_api.delete("/api/v1/models/digits/").status_code == 204
    assert sorted(p.name for p in (isolated_storage / "media").iterdir()) == ["faces"]


def test_a_refused_delete_keeps_every_file(admin_api, registered, isolated_storage, django_capture_on_commit_callbacks):
    registered("digits")
    admin_api.put("/api/v1/models/digits/aliases/production/", {"version": 1}, format="json")
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_api.delete("/api/v1/models/digits/versions/1/").status_code == 409
    assert len(files_under(isolated_storage / "media")) == 1


def test_a_version_meant_to_be_loaded_is_409_naming_the_server(admin_api, registered, dead_server):
    registered("digits")
    deploy(admin_api, 1)
    response = admin_api.delete("/api/v1/models/digits/versions/1/")
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "conflict"
    assert error["message"] == "digits v1 is deployed: on dead (desired loaded, observed pending); undeploy it first"
    assert ModelVersion.objects.filter(model__name="digits", number=1).exists()
    assert not AuditEvent.objects.filter(action="version.delete").exists()


def test_a_version_still_observed_loaded_is_409(admin_api, registered, dead_server):
    registered("digits")
    deploy(admin_api, 1)
    deploy(admin_api, 1, undeploy=True)
    Deployment.objects.update(observed="loaded")  # undeployed, but Triton has not unloaded it yet
    response = admin_api.delete("/api/v1/models/digits/versions/1/")
    assert response.status_code == 409
    assert "on dead (desired unloaded, observed loaded)" in error_of(response)["message"]


def test_a_version_behind_an_alias_is_409_naming_the_alias(admin_api, registered):
    registered("digits", versions=2)
    for alias in ("production", "canary"):
        admin_api.put(f"/api/v1/models/digits/aliases/{alias}/", {"version": 1}, format="json")
    response = admin_api.delete("/api/v1/models/digits/versions/1/")
    assert response.status_code == 409
    assert error_of(response)["message"] == (
        "digits v1 is behind the aliases canary, production: move or drop the alias first"
    )
    admin_api.put("/api/v1/models/digits/aliases/production/", {"version": 2}, format="json")
    admin_api.delete("/api/v1/models/digits/aliases/canary/")
    assert admin_api.delete("/api/v1/models/digits/versions/1/").status_code == 204
    # The history of the alias stays, pointing at a version that is gone.
    assert AliasMove.objects.filter(alias="production", from_version=None, to_version__number=2).exists()


def test_an_undeployed_versions_deployment_rows_go_with_it(admin_api, registered, dead_server):
    registered("digits", versions=2)
    deploy(admin_api, 1)
    deploy(admin_api, 1, undeploy=True)
    deploy(admin_api, 2)
    assert admin_api.delete("/api/v1/models/digits/versions/1/").status_code == 204
    assert [(d.version.number, d.desired) for d in Deployment.objects.all()] == [(2, "loaded")]


@pytest.mark.parametrize("scopes", [("read",), ("upload",), ("deploy",)])
def test_deleting_a_version_needs_the_admin_scope(client_with, registered, scopes):
    registered("digits")
    response = client_with(*scopes).delete("/api/v1/models/digits/versions/1/")
    assert response.status_code == 403
    assert "'admin' scope" in error_of(response)["message"]
    assert ModelVersion.objects.exists()


def test_a_token_restricted_to_a_model_may_delete_its_versions_only(client_with, registered):
    registered("digits", versions=2)
    registered("faces")
    client = client_with("admin", models=["digits"])
    assert client.delete("/api/v1/models/faces/versions/1/").status_code == 404
    assert client.delete("/api/v1/models/digits/versions/2/").status_code == 204
    assert sorted(ModelVersion.objects.values_list("model__name", "number")) == [("digits", 1), ("faces", 1)]


@pytest.mark.parametrize("path", ["digits/versions/9", "digits/versions/0", "nope/versions/1", "digits/versions/x"])
def test_deleting_an_unknown_version_is_404(admin_api, registered, path):
    registered("digits")
    response = admin_api.delete(f"/api/v1/models/{path}/")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


# --- servers --------------------------------------------------------------------


def test_a_server_with_deployments_meant_to_be_loaded_is_409_naming_them(admin_api, registered, dead_server):
    registered("digits", versions=2)
    deploy(admin_api, 1)
    deploy(admin_api, 2)
    response = admin_api.delete("/api/v1/servers/dead/")
    assert response.status_code == 409
    assert error_of(response)["message"] == (
        "server 'dead' has deployments meant to be loaded: digits v1 (desired loaded, observed pending), "
        "digits v2 (desired loaded, observed pending); undeploy them first"
    )
    assert InferenceServer.objects.filter(name="dead").exists()


def test_a_server_undeployed_from_is_deleted_with_its_deployment_rows(
    admin_api, registered, dead_server, django_capture_on_commit_callbacks
):
    registered("digits")
    with django_capture_on_commit_callbacks(execute=True):  # the reconciler runs: a failed load, a transition
        deploy(admin_api, 1)
    deploy(admin_api, 1, undeploy=True)
    assert DeploymentTransition.objects.exists()
    response = admin_api.delete("/api/v1/servers/dead/")
    assert response.status_code == 204, response.content
    assert not InferenceServer.objects.exists()
    assert not Deployment.objects.exists()
    assert not DeploymentTransition.objects.exists()
    assert ModelVersion.objects.exists()
    event = AuditEvent.objects.get(action="inferenceserver.delete")
    assert (event.actor, event.object_repr, event.details) == ("token:ci", "dead", {"deployments": 1})
    assert admin_api.get("/api/v1/servers/dead/").status_code == 404


@pytest.mark.parametrize("scopes", [("read",), ("upload",), ("deploy",)])
def test_deleting_a_server_needs_the_admin_scope(client_with, dead_server, scopes):
    response = client_with(*scopes).delete("/api/v1/servers/dead/")
    assert response.status_code == 403
    assert InferenceServer.objects.exists()


def test_a_token_restricted_to_some_models_cannot_delete_a_server(client_with, registered, dead_server):
    registered("digits")
    response = client_with("admin", models=["digits"]).delete("/api/v1/servers/dead/")
    assert response.status_code == 403
    assert error_of(response)["message"] == (
        "this API token is restricted to the models digits: it cannot delete inference servers"
    )
    assert InferenceServer.objects.exists()


def test_a_person_with_the_admin_role_may_delete_a_server_an_operator_may_not(session_client, dead_server):
    assert session_client("operator").delete("/api/v1/servers/dead/").status_code == 403
    assert session_client("admin").delete("/api/v1/servers/dead/").status_code == 204


# --- against a real Triton ------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the reconciler runs on commit, as in production
@pytest.mark.triton
def test_on_a_real_triton_deletes_wait_until_triton_has_unloaded_the_model(
    triton, doubler_zip, manifest, actor, isolated_storage
):
    server = InferenceServer.objects.create(name="local", base_url=triton.http_url)
    model = get_or_create_model("deletable", actor)
    version = register_version(model, doubler_zip(2), manifest, actor).version
    (deployment,) = request_deploy(version, [server], actor)  # eager Celery: reconciles on commit
    deployment.refresh_from_db()
    assert deployment.observed == "loaded", deployment.last_error
    with pytest.raises(InUse, match=r"deletable v1 is deployed: on local \(desired loaded, observed loaded\)"):
        delete_version(version, actor)
    with pytest.raises(InUse, match=r"server 'local' has deployments meant to be loaded: deletable v1"):
        delete_server(server, actor)

    request_undeploy(version, [server], actor)
    deployment.refresh_from_db()
    assert deployment.observed == "unloaded", deployment.last_error
    assert not triton_model_ready(triton, "deletable__v1")  # version 1's own Triton name
    delete_version(version, actor)
    delete_server(server, actor)
    assert not ModelVersion.objects.exists() and not InferenceServer.objects.exists()
    assert not Deployment.objects.exists()
    assert files_under(isolated_storage / "media") == []
    assert not (isolated_storage / "media" / "deletable").exists()  # no empty folder either


def triton_model_ready(triton, name: str) -> bool:
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    try:
        return client.is_model_ready(name)
    finally:
        client.close()
