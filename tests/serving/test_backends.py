"""Which backend a version needs, and which servers can serve it.

A server's declared backends (empty: unknown) decide at deploy time, so a
deploy that could only fail on Triton ("unable to find backend library") is
refused when it is requested, writing nothing.
"""

import pytest

from modelhub.audit.models import AuditEvent
from modelhub.registry.models import Model, ModelVersion
from modelhub.registry.services import get_or_create_model, register_version
from modelhub.serving import reconciler
from modelhub.serving.backends import BackendMissing, backend_of, cannot_serve, needs_onnx_runner
from modelhub.serving.models import Deployment, InferenceServer
from modelhub.serving.services import request_deploy
from tests.conftest import DOUBLER_MANIFEST, make_zip


def version(backend: str = "", platform: str = "") -> ModelVersion:
    return ModelVersion(model=Model(name="m"), number=3, backend=backend, platform=platform)


def server(*backends: str) -> InferenceServer:
    return InferenceServer(name="gpu-a", backends=list(backends))


@pytest.mark.parametrize(
    "backend, platform, expected",
    [
        ("python", "", "python"),
        ("", "onnxruntime_onnx", "onnxruntime"),
        ("", "pytorch_libtorch", "pytorch"),
        ("", "tensorflow_savedmodel", "tensorflow"),
        ("", "tensorflow_graphdef", "tensorflow"),
        ("", "tensorrt_plan", "tensorrt"),
        ("", "ensemble", ""),
        ("vllm", "", "vllm"),
    ],
)
def test_each_platform_maps_to_its_backend(backend, platform, expected):
    assert backend_of(version(backend, platform)) == expected


SERVABLE = [
    pytest.param(server(), version("", "pytorch_libtorch"), id="backends-unknown"),
    pytest.param(server("pytorch", "python"), version("", "pytorch_libtorch"), id="has-it"),
    pytest.param(server("python"), version("", "onnxruntime_onnx"), id="onnx-in-the-runner"),
    pytest.param(server("onnxruntime"), version("", "onnxruntime_onnx"), id="onnx-native"),
    pytest.param(server("python"), version("", "ensemble"), id="ensemble-needs-none"),
    pytest.param(server("tensorrtllm", "python"), version("tensorrtllm"), id="custom-backend"),
]


@pytest.mark.parametrize("srv, ver", SERVABLE)
def test_servers_that_can_serve_a_version(srv, ver):
    assert cannot_serve(srv, ver) == ""


@pytest.mark.parametrize(
    "srv, ver, expected",
    [
        (
            server("python"),
            version("", "pytorch_libtorch"),
            "server 'gpu-a' declares backends python; m v3 needs backend 'pytorch' (platform 'pytorch_libtorch')",
        ),
        (
            server("tensorrt"),
            version("", "onnxruntime_onnx"),
            "server 'gpu-a' declares backends tensorrt; m v3 needs backend 'onnxruntime' "
            "(platform 'onnxruntime_onnx') or 'python' for ModelHub's ONNX runner",
        ),
        (
            server("onnxruntime"),
            version("python"),
            "server 'gpu-a' declares backends onnxruntime; m v3 needs backend 'python'",
        ),
    ],
)
def test_a_server_without_the_backend_is_named_with_what_the_version_needs(srv, ver, expected):
    assert cannot_serve(srv, ver) == expected


@pytest.mark.parametrize(
    "srv, ver, expected",
    [
        (server("python"), version("", "onnxruntime_onnx"), True),
        (server("python", "onnxruntime"), version("", "onnxruntime_onnx"), False),
        (server(), version("", "onnxruntime_onnx"), False),
        (server("tensorrt"), version("", "onnxruntime_onnx"), False),
        (server("python"), version("python"), False),
    ],
)
def test_the_reconciler_asks_the_same_place_about_the_onnx_runner(srv, ver, expected):
    assert needs_onnx_runner(srv, ver) is expected
    assert reconciler._needs_onnx_runner(srv, ver) is expected


@pytest.mark.django_db
def test_a_deploy_to_servers_that_cannot_serve_it_writes_nothing(actor, tmp_path):
    model = get_or_create_model("torch", actor)
    artifact = make_zip(tmp_path / "t.zip", {"1/model.pt": b"not really torchscript"})
    manifest = {**DOUBLER_MANIFEST, "backend": "", "platform": "pytorch_libtorch"}
    torch_version = register_version(model, artifact, manifest, actor).version
    fine = InferenceServer.objects.create(name="any", base_url="http://127.0.0.1:9")  # backends unknown
    cpu = InferenceServer.objects.create(name="cpu", base_url="http://127.0.0.1:9", backends=["python"])
    trt = InferenceServer.objects.create(name="trt", base_url="http://127.0.0.1:9", backends=["tensorrt"])
    before = AuditEvent.objects.count()

    with pytest.raises(BackendMissing) as caught:
        request_deploy(torch_version, [fine, cpu, trt], actor)
    message = caught.value.errors["server"]
    assert "server 'cpu' declares backends python" in message
    assert "server 'trt' declares backends tensorrt" in message
    assert "'any'" not in message
    assert "torch v1 needs backend 'pytorch' (platform 'pytorch_libtorch')" in message
    assert not Deployment.objects.exists()  # not even on the server that could have served it
    assert AuditEvent.objects.count() == before
