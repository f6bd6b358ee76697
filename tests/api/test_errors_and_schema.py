"""One error shape for everything; the OpenAPI schema and its offline docs pages."""

import json
import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


def test_unknown_api_urls_are_json_404s(admin_api):
    response = admin_api.get("/api/v1/nothing-here/")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    response = admin_api.get("/api/v1/models")
    assert "end with a slash: /api/v1/models/" in error_of(response)["message"]


def test_method_not_allowed_is_405_in_the_error_shape(admin_api):
    response = admin_api.delete("/api/v1/models/")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_malformed_json_is_400_parse_error(admin_api):
    response = admin_api.generic("POST", "/api/v1/models/", "{nope", content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "parse_error"


def test_unsupported_media_type_is_415(admin_api):
    response = admin_api.generic("POST", "/api/v1/models/", "name=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


def test_an_oversized_json_body_is_413(admin_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = admin_api.post("/api/v1/models/", {"name": "x", "description": "d" * 5000}, format="json")
    assert response.status_code == 413
    assert error_of(response)["code"] == "too_large"


def test_nested_validation_errors_are_flattened_to_field_paths(admin_api):
    response = admin_api.post(
        "/api/v1/servers/", {"name": "s", "base_url": "http://x", "labels": ["ok", ""]}, format="json"
    )
    assert response.status_code == 400
    error = error_of(response)
    assert list(error["fields"]) == ["labels.1"]
    assert error["message"] == f"labels.1: {error['fields']['labels.1']}"


def test_an_unexpected_exception_is_a_500_without_traceback(admin_api, monkeypatch, caplog):
    from modelhub.api import views

    def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(views, "create_model", explode)
    response = admin_api.post("/api/v1/models/", {"name": "boom"}, format="json")
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "server_error"
    assert "secret internals" not in response.content.decode()
    assert "secret internals" in caplog.text  # but it is in the log


def test_the_schema_describes_the_multipart_upload():
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    upload = schema["paths"]["/api/v1/models/{model_name}/versions/"]["post"]
    body = upload["requestBody"]["content"]
    assert list(body) == ["multipart/form-data"]
    component = schema["components"]["schemas"][body["multipart/form-data"]["schema"]["$ref"].split("/")[-1]]
    assert component["properties"]["artifact"] == {**component["properties"]["artifact"], "format": "binary"}
    assert component["properties"]["manifest"]["type"] == "string"
    assert component["required"] == ["artifact"]
    assert set(upload["responses"]) >= {"200", "201", "400", "401", "403", "404", "409", "413"}
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    error = schema["components"]["schemas"]["ErrorDetail"]
    assert set(error["properties"]) == {"message", "code", "fields"}


def test_the_schema_validates_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_load_their_assets_locally(path):
    html = APIClient().get(path).content.decode()
    assert "/static/drf_spectacular_sidecar/" in html
    # Nothing fetched from elsewhere: no CDN, no web fonts.
    assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", html)
    # Host names only: the page embeds a random CSRF token, which may spell "cdn".
    assert "googleapis" not in html and not re.search(r"cdn[a-z0-9-]*\.", html.lower())
    for asset in ("swagger-ui-dist/swagger-ui-bundle.js", "redoc/bundles/redoc.standalone.js"):
        assert finders.find(f"drf_spectacular_sidecar/{asset}"), asset


BROWSABLE = [
    "/api/v1/models/",
    "/api/v1/models/digits/",
    "/api/v1/models/digits/versions/",
    "/api/v1/models/digits/versions/1/",
    "/api/v1/models/digits/aliases/",
    "/api/v1/models/digits/aliases/production/",
    "/api/v1/models/digits/alias-history/",
    "/api/v1/deployments/",
    "/api/v1/servers/",
    "/api/v1/servers/dead/",
    "/api/v1/audit/",
    "/api/v1/whoami/",
]


def test_the_browsable_api_renders_for_signed_in_people(session_client, registered, dead_server, admin_api):
    registered("digits")
    admin_api.put("/api/v1/models/digits/aliases/production/", {"version": 1}, format="json")
    deployment = admin_api.post("/api/v1/models/digits/versions/1/deploy/", {"server": "dead"}, format="json")
    client = session_client("admin")
    for path in [*BROWSABLE, deployment.json()["deployments"][0]["url"]]:
        response = client.get(path, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, path
        assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    "query",
    [
        "servers/?enabled=x%25%2F",  # the value schemathesis found: "%/" in a boolean filter
        "servers/?live=50%25",
        "deployments/?version=9%25d",
        "audit/?since=2026%25s",
        "deployments/?desired=",
    ],
)
def test_a_percent_sign_in_a_bad_filter_value_is_a_400_quoting_it(admin_api, query):
    response = admin_api.get(f"/api/v1/{query}")
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "invalid"
    if "%25" in query:
        assert "%" in error["message"], error
