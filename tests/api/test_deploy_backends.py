"""A deploy to a server whose declared backends cannot serve the version is a 400 naming both."""

import pytest

from modelhub.serving.models import Deployment, InferenceServer
from tests.api.conftest import error_of, upload
from tests.conftest import make_zip

pytestmark = pytest.mark.django_db


@pytest.fixture
def torch_version(admin_api, tmp_path, doubler_manifest):
    manifest = {**doubler_manifest, "backend": "", "platform": "pytorch_libtorch"}
    artifact = make_zip(tmp_path / "torch.zip", {"1/model.pt": b"torchscript bytes"})
    response = upload(admin_api, "torchy", artifact, manifest)
    assert response.status_code == 201, response.json()
    return response.json()["url"]


def test_deploy_to_a_server_without_the_backend_is_400_naming_both(admin_api, torch_version):
    InferenceServer.objects.create(name="cpu", base_url="http://127.0.0.1:9", backends=["python", "onnxruntime"])
    response = admin_api.post(f"{torch_version}deploy/", {"server": "cpu"}, format="json")
    assert response.status_code == 400, response.json()
    error = error_of(response)
    assert error["fields"] == {
        "server": "server 'cpu' declares backends python, onnxruntime; "
        "torchy v1 needs backend 'pytorch' (platform 'pytorch_libtorch')"
    }
    assert not Deployment.objects.exists()


def test_deploy_by_label_is_refused_whole_when_one_server_lacks_the_backend(admin_api, torch_version):
    InferenceServer.objects.create(name="gpu", base_url="http://127.0.0.1:9", labels=["prod"], backends=["pytorch"])
    InferenceServer.objects.create(name="cpu", base_url="http://127.0.0.1:9", labels=["prod"], backends=["python"])
    response = admin_api.post(f"{torch_version}deploy/", {"label": "prod"}, format="json")
    assert response.status_code == 400, response.json()
    assert "server 'cpu' declares backends python" in error_of(response)["fields"]["server"]
    assert not Deployment.objects.exists()


@pytest.mark.parametrize("backends", [[], ["pytorch"]], ids=["unknown", "declared"])
def test_deploy_to_a_server_that_has_or_may_have_the_backend_is_accepted(admin_api, torch_version, backends):
    InferenceServer.objects.create(name="gpu", base_url="http://127.0.0.1:9", backends=backends)
    response = admin_api.post(f"{torch_version}deploy/", {"server": "gpu"}, format="json")
    assert response.status_code == 202, response.json()
    assert Deployment.objects.filter(server__name="gpu", desired="loaded").count() == 1
