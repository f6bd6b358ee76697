"""Shared fixtures: a real tritonserver per test session, artifact builders, actors."""

import io
import json
import socket
import tarfile
import zipfile
from pathlib import Path

import pytest
from django.core.servers.basehttp import ThreadedWSGIServer
from django.test.testcases import LiveServerThread

from devtools.local_triton import LocalTriton


class NoDelayWSGIServer(ThreadedWSGIServer):
    """The live server with Nagle's algorithm off on each connection.

    wsgiref sends a response's headers and body in two writes; with Nagle on, the
    body waits for the client's delayed ACK, so every request took 40 ms more.
    """

    def get_request(self):
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address


LiveServerThread.server_class = NoDelayWSGIServer

# A python-backend model that doubles its FP32 input. Its behaviour is real
# Triton work, which is what the deploy tests need: a model that loads fast.
DOUBLER_MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            y = pb_utils.Tensor("OUTPUT", (x * {factor}).astype(np.float32))
            responses.append(pb_utils.InferenceResponse([y]))
        return responses
"""

# A model whose auto_complete_config adds an output the registered schema
# does not have: Triton then serves metadata that disagrees with the registry.
EXTRA_OUTPUT_MODEL_PY = (
    DOUBLER_MODEL_PY.format(factor=2)
    + """
    @staticmethod
    def auto_complete_config(config):
        config.add_output({"name": "SURPRISE", "data_type": "TYPE_FP32", "dims": [1]})
        return config
"""
)

BROKEN_MODEL_PY = "def this is not python(:\n"

DOUBLER_MANIFEST = {
    "backend": "python",
    "max_batch_size": 0,
    "inputs": [{"name": "INPUT", "datatype": "FP32", "dims": [-1]}],
    "outputs": [{"name": "OUTPUT", "datatype": "FP32", "dims": [-1]}],
    "provenance": {"git_commit": "0123abcd", "ci_run_url": "https://ci.example.com/runs/1"},
    "metadata": {"metrics": {"accuracy": 0.5}},
}


def doubler_source(factor: int = 2) -> str:
    return DOUBLER_MODEL_PY.format(factor=factor)


def make_zip(path: Path, files: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_tar_gz(path: Path, files: dict[str, str | bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return path


@pytest.fixture
def doubler_zip(tmp_path):
    """Build a doubler artifact; each factor gives different bytes (a new version)."""

    def build(factor: int = 2, name: str = "doubler.zip", extra: dict | None = None) -> Path:
        return make_zip(tmp_path / name, {"1/model.py": doubler_source(factor), **(extra or {})})

    return build


@pytest.fixture
def manifest():
    return json.loads(json.dumps(DOUBLER_MANIFEST))


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    """A real tritonserver on free loopback ports, for the whole session.

    Tests that kill or restart a server start their own (see triton_factory).
    """
    server = LocalTriton(tmp_path_factory.mktemp("triton"))
    server.start(timeout=120)
    yield server
    server.stop()


@pytest.fixture
def triton_factory(tmp_path_factory):
    started = []

    def start() -> LocalTriton:
        server = LocalTriton(tmp_path_factory.mktemp("triton-own")).start(timeout=120)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def actor():
    from modelhub.audit.actors import Actor
    from modelhub.audit.models import Source

    return Actor(source=Source.CLI)


@pytest.fixture(autouse=True)
def artifact_root(settings, tmp_path_factory):
    """Each test stores artifacts in its own folder, so 'nothing left behind' is checkable."""
    settings.MEDIA_ROOT = str(tmp_path_factory.mktemp("artifacts"))
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def modelhub_stays_the_current_celery_app():
    """A test that makes a Celery app of its own (to send to another broker) must not leave it
    current: every later deploy would send its tasks there instead of running them eagerly."""
    from celery import current_app

    from modelhub.celery import app

    yield
    if current_app._get_current_object() is not app:
        app.set_current()
        pytest.fail("this test left another Celery app current (make it with set_as_current=False)")
