"""?ordering= on every list: a field it does not know is 400 naming the allowed ones,
like every other bad query parameter, never a silent fallback to the default order."""

import re

import pytest

from modelhub.api.urls import router
from modelhub.serving.models import Deployment
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


def list_endpoints() -> list[tuple[str, list[str]]]:
    """(path, ordering fields) of every list the router serves, under the model "digits"."""
    endpoints = []
    for prefix, viewset, _ in router.registry:
        if hasattr(viewset, "list"):
            path = re.sub(r"\(\?P<model_name>[^)]*\)", "digits", prefix)
            endpoints.append((f"/api/v1/{path}/", list(viewset.ordering_fields)))
        for extra in viewset.get_extra_actions():
            if extra.detail and "ordering_fields" in extra.kwargs:  # a list under one object
                path = f"/api/v1/{prefix}/{{id}}/{extra.url_path}/"
                endpoints.append((path, list(extra.kwargs["ordering_fields"])))
    return endpoints


ENDPOINTS = list_endpoints()


def test_every_list_is_covered():
    assert {path for path, _ in ENDPOINTS} >= {
        "/api/v1/models/",
        "/api/v1/models/digits/versions/",
        "/api/v1/models/digits/aliases/",
        "/api/v1/models/digits/alias-history/",
        "/api/v1/deployments/",
        "/api/v1/servers/",
        "/api/v1/audit/",
        "/api/v1/deployments/{id}/transitions/",
    }


@pytest.fixture
def listed(admin_api, registered, dead_server):
    """GET one of ENDPOINTS, with rows in it (a deployment for the {id} of its transitions)."""
    registered("digits")
    admin_api.post("/api/v1/models/digits/versions/1/deploy/", {"server": "dead"}, format="json")
    deployment = Deployment.objects.get()

    def get(path: str, ordering: str):
        return admin_api.get(path.format(id=deployment.pk), {"ordering": ordering})

    return get


@pytest.mark.parametrize("path, fields", ENDPOINTS, ids=[path for path, _ in ENDPOINTS])
def test_an_unknown_ordering_is_400_naming_the_allowed_fields(listed, path, fields):
    for bad in ("nope", f"{fields[0]},nope", "", f" {fields[0]}", f"--{fields[0]}", "?"):
        response = listed(path, bad)
        assert response.status_code == 400, (bad, response.content)
        error = error_of(response)
        assert error["code"] == "invalid"
        assert set(error["fields"]) == {"ordering"}
        assert f"cannot order by {bad.split(',')[-1]!r}" in error["fields"]["ordering"]
        assert ", ".join(fields) in error["fields"]["ordering"]


@pytest.mark.parametrize("path, fields", ENDPOINTS, ids=[path for path, _ in ENDPOINTS])
def test_every_allowed_ordering_is_accepted(listed, path, fields):
    for field in fields:
        for term in (field, f"-{field}", f"{field},-{fields[0]}"):
            response = listed(path, term)
            assert response.status_code == 200, (term, response.content)


def test_ordering_orders(admin_api, registered):
    registered("digits")
    registered("alpha")
    names = [m["name"] for m in admin_api.get("/api/v1/models/", {"ordering": "-name"}).json()["results"]]
    assert names == ["digits", "alpha"]


def test_the_schema_says_which_orderings_there_are(admin_api):
    schema = admin_api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    (parameter,) = [p for p in schema["paths"]["/api/v1/servers/"]["get"]["parameters"] if p["name"] == "ordering"]
    pattern = parameter["schema"]["pattern"]
    assert re.search(pattern, "-name,created_at")
    assert not re.search(pattern, "nope")
    assert not re.search(pattern, "name,")
