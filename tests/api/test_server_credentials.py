"""A server URL carrying user:password@ is a 400 naming the field (ModelHub never sends them)."""

import pytest

from modelhub.serving.models import InferenceServer

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("field", ["base_url", "metrics_url"])
def test_a_server_url_with_credentials_is_a_400_naming_the_field(admin_api, field):
    body = {"name": "gpu-a", "base_url": "http://triton-a:8000", field: "http://ops:hunter2@triton-a:8002/metrics"}

    response = admin_api.post("/api/v1/servers/", body, format="json")

    assert response.status_code == 400, response.content
    text = response.content.decode()
    assert field in text and "must not contain a user name or password" in text and "hunter2" not in text
    assert not InferenceServer.objects.exists()


def test_an_edit_that_adds_credentials_is_refused_too(admin_api):
    InferenceServer.objects.create(name="gpu-a", base_url="http://triton-a:8000")

    response = admin_api.patch("/api/v1/servers/gpu-a/", {"base_url": "https://u:p@triton-a:8000"}, format="json")

    assert response.status_code == 400 and "base_url" in response.content.decode()
    assert InferenceServer.objects.get().base_url == "http://triton-a:8000"


def test_a_server_registered_with_credentials_before_is_shown_to_readers_masked(client_with):
    url = "http://ops:hunter2@triton-a:8000"
    InferenceServer.objects.create(name="gpu-a", base_url=url, metrics_url=url + "/metrics")
    reader = client_with("read")

    for path in ("/api/v1/servers/", "/api/v1/servers/gpu-a/"):
        response = reader.get(path)
        text = response.content.decode()
        assert response.status_code == 200 and "hunter2" not in text, path
        assert "http://***@triton-a:8000/metrics" in text
