"""/api/v1/models/: list, create, read, update, delete; paging, filtering, ordering."""

import io
import zipfile

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from modelhub.audit.models import AuditEvent
from modelhub.registry.models import Model, ModelVersion, TaskKind
from tests.api.conftest import error_of, files_under, upload
from tests.conftest import doubler_source

pytestmark = pytest.mark.django_db


def test_create_read_update_a_model(admin_api):
    response = admin_api.post(
        "/api/v1/models/", {"name": "digits", "description": "MNIST", "task_kind": "classification"}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response["Location"].endswith("/api/v1/models/digits/")
    body = response.json()
    assert body["name"] == "digits"
    assert body["latest_version"] is None and body["version_count"] == 0 and body["aliases"] == {}

    assert admin_api.get("/api/v1/models/digits/").json()["description"] == "MNIST"
    response = admin_api.patch("/api/v1/models/digits/", {"description": "handwritten digits"}, format="json")
    assert response.status_code == 200
    assert response.json()["description"] == "handwritten digits"
    response = admin_api.put("/api/v1/models/digits/", {"description": "", "task_kind": "other"}, format="json")
    assert response.status_code == 200
    assert Model.objects.get(name="digits").task_kind == TaskKind.OTHER
    actions = list(AuditEvent.objects.filter(object_type="registry.model").values_list("action", flat=True))
    assert sorted(actions) == ["model.create", "model.update", "model.update"]


def test_a_model_name_cannot_be_changed(admin_api, registered):
    registered("digits")
    response = admin_api.patch("/api/v1/models/digits/", {"name": "other"}, format="json")
    assert response.status_code == 200
    assert response.json()["name"] == "digits"


def test_creating_a_taken_name_is_409(admin_api, registered):
    registered("digits")
    response = admin_api.post("/api/v1/models/", {"name": "digits"}, format="json")
    assert response.status_code == 409
    assert "already exists" in error_of(response)["message"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "Digits"}, "name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"name": "ok", "task_kind": "poetry"}, "task_kind"),
        ({}, "name"),
    ],
)
def test_invalid_model_fields_are_400_naming_the_field(admin_api, body, field):
    response = admin_api.post("/api/v1/models/", body, format="json")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid"
    assert field in error["fields"]
    assert error["message"].startswith(f"{field}: ")


def test_list_shows_latest_version_count_and_aliases(admin_api, registered):
    registered("digits", versions=3)
    admin_api.put("/api/v1/models/digits/aliases/production/", {"version": 2}, format="json")
    (row,) = admin_api.get("/api/v1/models/").json()["results"]
    assert row["latest_version"] == 3
    assert row["version_count"] == 3
    assert row["aliases"] == {"production": 2}


def test_list_pages_filters_and_orders(admin_api):
    for name in ["alpha", "beta", "gamma", "delta"]:
        admin_api.post(
            "/api/v1/models/", {"name": name, "task_kind": "regression" if name < "c" else "other"}, format="json"
        )
    page = admin_api.get("/api/v1/models/?limit=2&offset=1").json()
    assert page["count"] == 4
    assert [m["name"] for m in page["results"]] == ["beta", "delta"]
    assert page["next"] and page["previous"]
    assert [m["name"] for m in admin_api.get("/api/v1/models/?task_kind=regression").json()["results"]] == [
        "alpha",
        "beta",
    ]
    assert [m["name"] for m in admin_api.get("/api/v1/models/?name_contains=ta").json()["results"]] == ["beta", "delta"]
    assert admin_api.get("/api/v1/models/?ordering=-name").json()["results"][0]["name"] == "gamma"


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=abc", "limit=1001", "offset=-1", "task_kind=poetry", "task_kind=", "limit="]
)
def test_bad_paging_or_filter_values_are_400(admin_api, query):
    response = admin_api.get(f"/api/v1/models/?{query}")
    assert response.status_code == 400
    assert error_of(response)["fields"]


def test_list_query_count_does_not_grow_with_rows(admin_api, registered):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_api.get("/api/v1/models/").status_code == 200
        return len(captured)

    registered("m0", versions=1)
    few = queries()
    for i in range(1, 6):
        model = registered(f"m{i}", versions=2)
        admin_api.put(f"/api/v1/models/{model.name}/aliases/production/", {"version": 1}, format="json")
    assert queries() == few


def test_deleting_a_model_removes_versions_aliases_and_files(admin_api, registered, isolated_storage):
    registered("digits", versions=2)
    admin_api.put("/api/v1/models/digits/aliases/production/", {"version": 1}, format="json")
    assert len(files_under(isolated_storage / "media")) == 2
    response = admin_api.delete("/api/v1/models/digits/")
    assert response.status_code == 204
    assert not Model.objects.filter(name="digits").exists()
    assert not ModelVersion.objects.exists()
    assert AuditEvent.objects.filter(action="model.delete").exists()


def test_deleted_artifacts_leave_storage_once_committed(
    admin_api, registered, isolated_storage, django_capture_on_commit_callbacks
):
    registered("digits", versions=2)
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_api.delete("/api/v1/models/digits/").status_code == 204
    assert files_under(isolated_storage / "media") == []


def test_deleting_a_deployed_model_is_409_until_it_is_undeployed(admin_api, registered, dead_server):
    registered("digits")
    assert (
        admin_api.post("/api/v1/models/digits/versions/1/deploy/", {"server": "dead"}, format="json").status_code == 202
    )
    response = admin_api.delete("/api/v1/models/digits/")
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "conflict"
    assert "v1 on dead" in error["message"] and "undeploy it first" in error["message"]
    assert Model.objects.filter(name="digits").exists()

    assert (
        admin_api.post("/api/v1/models/digits/versions/1/undeploy/", {"server": "dead"}, format="json").status_code
        == 202
    )
    assert admin_api.delete("/api/v1/models/digits/").status_code == 204


def test_a_model_observed_loaded_is_still_deployed(admin_api, registered, dead_server):
    from modelhub.serving.models import Deployment

    registered("digits")
    admin_api.post("/api/v1/models/digits/versions/1/undeploy/", {"server": "dead"}, format="json")
    Deployment.objects.update(observed="loaded")  # desired unloaded, but Triton still serves it
    assert admin_api.delete("/api/v1/models/digits/").status_code == 409


def test_unknown_model_is_404(admin_api):
    for path in ["/api/v1/models/nope/", "/api/v1/models/Not%20Valid/", "/api/v1/models/%00/"]:
        response = admin_api.get(path)
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"


MANIFEST = {
    "backend": "python",
    "inputs": [{"name": "INPUT", "datatype": "FP32", "dims": [-1]}],
    "outputs": [{"name": "OUTPUT", "datatype": "FP32", "dims": [-1]}],
}


def doubler_artifact_bytes(factor: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("1/model.py", doubler_source(factor))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/models/m0/versions/",
        "/api/v1/models/m0/aliases/",
        "/api/v1/models/m0/alias-history/",
        "/api/v1/deployments/",
        "/api/v1/audit/",
    ],
)
def test_other_lists_query_counts_do_not_grow_with_rows(admin_api, registered, dead_server, path):
    def grow(start: int, stop: int) -> None:
        for number in range(start, stop):
            upload(admin_api, "m0", doubler_artifact_bytes(number), MANIFEST)
            admin_api.put(f"/api/v1/models/m0/aliases/a{number}/", {"version": number}, format="json")
            admin_api.post(f"/api/v1/models/m0/versions/{number}/deploy/", {"server": "dead"}, format="json")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_api.get(path).status_code == 200
        return len(captured)

    grow(1, 2)
    few = queries()
    grow(2, 6)
    assert queries() == few
