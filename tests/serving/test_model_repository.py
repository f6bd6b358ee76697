"""Servers with a model repository: ModelHub writes the model's folder, Triton reads it itself.

Each test starts a private tritonserver and registers it with its own
--model-repository folder as the server's `model_repository`; the reconciler
then loads with the config only, and a stock tritonclient asks the models.
"""

import os
import zipfile

import numpy as np
import pytest
import tritonclient.http as triton_http
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelhub.lib.onnx_models import ONNX_RUNNER_MODEL_PY
from modelhub.registry.services import get_or_create_model, register_version
from modelhub.serving.model_repository import MARKER
from modelhub.serving.models import Deployment, InferenceServer, ObservedState, triton_model_name
from modelhub.serving.reconciler import _write_to_model_repository
from modelhub.serving.services import request_deploy, request_undeploy

# The API fixtures are imported from tests/api/conftest.py; naming them as
# arguments redefines the imported names, which is how pytest fixtures work.
# ruff: noqa: F811
from tests.api.conftest import admin_api, ci_user, client_with, make_token, make_user  # noqa: F401 (fixtures)
from tests.conftest import make_tar_gz, make_zip
from tests.serving.test_streaming_load import MULTI_FILE_MODEL_PY

pytestmark = pytest.mark.django_db(transaction=True)


def register_server(triton, name: str = "repo-triton", **fields) -> InferenceServer:
    fields.setdefault("model_repository", str(triton.repository))
    return InferenceServer.objects.create(
        name=name, base_url=triton.http_url, metrics_url=triton.metrics_url, backends=["python"], **fields
    )


def deploy(version, server, actor) -> Deployment:
    [deployment] = request_deploy(version, [server], actor)  # eager Celery: reconciles on commit
    deployment.refresh_from_db()
    return deployment


def infer(client, model: str, version: int, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
    """Version `version` of registered model `model`, under its own Triton name."""
    tensors = []
    for name, array in inputs.items():
        tensor = triton_http.InferInput(name, list(array.shape), triton_http.np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return client.infer(triton_model_name(model, version), tensors, model_version=str(version)).as_numpy(output)


@pytest.fixture
def tritonclient_for():
    clients = []

    def connect(triton) -> triton_http.InferenceServerClient:
        clients.append(triton_http.InferenceServerClient(triton.http_url.removeprefix("http://")))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


@pytest.mark.triton
def test_a_multi_file_model_is_written_to_the_folder_and_served_from_it_version_by_version(
    triton_factory, tritonclient_for, actor, manifest, tmp_path, settings
):
    triton = triton_factory()
    server = register_server(triton)
    client = tritonclient_for(triton)
    # Nothing travels in the request: a load that carried these files would be refused.
    settings.MAX_LOAD_BYTES = 100
    tails = [os.urandom(2 * 1024 * 1024 + 1), os.urandom(1000)]
    artifacts = []
    for i, (factor, tail) in enumerate(zip((2.5, 4.0), tails, strict=True)):
        files = {
            "1/model.py": MULTI_FILE_MODEL_PY,
            "1/data/factor.bin": np.array([factor], dtype=np.float64).tobytes() + tail,
            "labels.txt": "cat\ndog\nbird\n",
        }
        artifacts.append((make_zip(tmp_path / f"multi-{i}.zip", files), files))
    model = get_or_create_model("multi", actor)
    v1 = register_version(model, artifacts[0][0], manifest, actor).version
    x = np.array([1.0, 2.0], dtype=np.float32)
    # what each version answers for x: its factor, the 3 labels, its data file's length mod 7
    answers = {1: [2.5 + 3 + len(tails[0]) % 7, 5 + 3 + len(tails[0]) % 7], 2: [4 + 3 + 6, 8 + 3 + 6]}

    assert deploy(v1, server, actor).observed == ObservedState.LOADED
    folder = triton.repository / "multi__v1"  # one Triton model, and folder, per version
    # byte for byte what the zip holds, where Triton looks for it
    with zipfile.ZipFile(artifacts[0][0]) as zf:
        for name in zf.namelist():
            assert (folder / name).read_bytes() == zf.read(name), name
    assert sorted(p.name for p in folder.iterdir()) == ["1", "labels.txt"]
    assert infer(client, "multi", 1, {"INPUT": x}, "OUTPUT").tolist() == answers[1]
    # a repository model, no override
    assert {m["name"] for m in client.get_model_repository_index()} == {"multi__v1"}
    first = (folder / "1").stat().st_ino

    v2 = register_version(model, artifacts[1][0], manifest, actor).version
    assert deploy(v2, server, actor).observed == ObservedState.LOADED
    assert (folder / "1").stat().st_ino == first  # v2's load leaves v1's folder (and v1) alone
    second = triton.repository / "multi__v2"
    assert sorted(p.name for p in second.iterdir()) == ["2", "labels.txt"]
    assert (second / "2" / "data" / "factor.bin").read_bytes() == artifacts[1][1]["1/data/factor.bin"]
    assert infer(client, "multi", 1, {"INPUT": x}, "OUTPUT").tolist() == answers[1]
    assert infer(client, "multi", 2, {"INPUT": x}, "OUTPUT").tolist() == answers[2]
    assert {m["name"] for m in client.get_model_repository_index()} == {"multi__v1", "multi__v2"}

    request_undeploy(v1, [server], actor)
    assert Deployment.objects.get(version=v1).observed == ObservedState.UNLOADED
    assert not folder.exists()  # no leftovers either
    assert sorted(p.name for p in second.iterdir()) == ["2", "labels.txt"]
    assert not client.is_model_ready("multi__v1", "1") and client.is_model_ready("multi__v2", "2")
    assert infer(client, "multi", 2, {"INPUT": x}, "OUTPUT").tolist() == answers[2]

    request_undeploy(v2, [server], actor)
    assert Deployment.objects.get(version=v2).observed == ObservedState.UNLOADED
    assert not second.exists()


@pytest.mark.triton
def test_a_bare_onnx_model_is_linked_into_the_folder_with_its_runner_and_answers(
    triton_factory, tritonclient_for, actor, tmp_path
):
    triton = triton_factory()
    server = register_server(triton)  # python only: the ONNX runner serves it
    iris = load_iris()
    X, y = iris.data.astype(np.float32), iris.target
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    onnx_path = tmp_path / "iris.onnx"
    onnx_path.write_bytes(to_onnx(clf, X[:1], options={id(clf): {"zipmap": False}}).SerializeToString())
    version = register_version(get_or_create_model("iris", actor), onnx_path, {"max_batch_size": 16}, actor).version

    assert deploy(version, server, actor).observed == ObservedState.LOADED

    version_folder = triton.repository / "iris__v1" / "1"
    # (and the __pycache__ the python backend writes when it imports the runner)
    assert {MARKER, "model.onnx", "model.py"} <= {p.name for p in version_folder.iterdir()}
    assert (version_folder / "model.onnx").read_bytes() == onnx_path.read_bytes()
    # the stored artifact and the repository are on one file system here: a hard link, no copy
    assert (version_folder / "model.onnx").stat().st_ino == os.stat(version.artifact.path).st_ino
    assert (version_folder / "model.py").read_text() == ONNX_RUNNER_MODEL_PY
    client = tritonclient_for(triton)
    probabilities = infer(client, "iris", 1, {"X": X[::10]}, "probabilities")
    np.testing.assert_allclose(probabilities, clf.predict_proba(X[::10]), atol=1e-5)


@pytest.mark.triton
def test_a_folder_the_worker_cannot_write_fails_the_deployment_naming_server_and_folder(
    triton, actor, manifest, doubler_zip, tmp_path
):
    if os.geteuid() == 0:  # root writes any folder of a writable file system; /proc takes no new entries
        folder = "/proc"
    else:
        folder = str(tmp_path / "read-only")
        os.mkdir(folder, 0o555)
    server = register_server(triton, name="read-only-repo", model_repository=folder)
    version = register_version(get_or_create_model("doubler", actor), doubler_zip(2), manifest, actor).version

    deployment = deploy(version, server, actor)

    assert deployment.observed == ObservedState.FAILED
    assert f"the model repository folder {folder} of server read-only-repo is not writable" in deployment.last_error
    if folder != "/proc":
        assert os.listdir(folder) == []  # nothing half-written


def make_mixed_zip(path, files: dict[str, str | bytes]):
    """A zip that stores its binary members uncompressed (as weights usually are) and
    deflates the rest: the stored ones are copied out in the kernel, the others decompressed."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data, zipfile.ZIP_STORED if isinstance(data, bytes) else zipfile.ZIP_DEFLATED)
    return path


@pytest.mark.parametrize(
    "packer", [make_zip, make_mixed_zip, make_tar_gz], ids=["zip", "zip-with-stored-members", "tar.gz"]
)
def test_a_version_folder_is_written_whole_byte_for_byte_and_a_stale_one_is_replaced(actor, manifest, tmp_path, packer):
    files = {"1/model.py": "print(1)\n", "1/sub/data.bin": os.urandom(300_000), "labels.txt": "a\nb\n"}
    version = register_version(
        get_or_create_model("written", actor), packer(tmp_path / "artifact", files), manifest, actor
    ).version
    root = tmp_path / "repository"
    (root / "written" / "1").mkdir(parents=True)
    (root / "written" / "1" / "model.py").write_text("a deleted model's version 1, of the same name")
    server = InferenceServer(name="disk-only", model_repository=str(root), backends=["python"])

    _write_to_model_repository(server, "written", [version])

    folder = root / "written"
    for path, data in files.items():
        assert (folder / path).read_bytes() == (data.encode() if isinstance(data, str) else data), path
    assert (folder / "1" / MARKER).read_text() == version.sha256
    assert sorted(p.name for p in folder.iterdir()) == ["1", "labels.txt"]  # the stale folder went
    first = (folder / "1").stat().st_ino
    _write_to_model_repository(server, "written", [version])
    assert (folder / "1").stat().st_ino == first  # complete: reused as it is


def test_the_api_takes_an_absolute_model_repository_and_refuses_a_relative_one(admin_api):
    body = {"name": "shared", "base_url": "http://triton-a:8000", "model_repository": "models/triton"}
    response = admin_api.post("/api/v1/servers/", body, format="json")
    assert response.status_code == 400
    assert "must be an absolute path" in response.json()["error"]["fields"]["model_repository"]

    # only its form is checked here: the folder is the worker's (and Triton's), not the web process's
    response = admin_api.post("/api/v1/servers/", dict(body, model_repository="/srv/triton/models"), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["model_repository"] == "/srv/triton/models"
    response = admin_api.patch(response.json()["url"], {"model_repository": ""}, format="json")
    assert response.status_code == 200 and response.json()["model_repository"] == ""
    assert InferenceServer.objects.get(name="shared").model_repository == ""
