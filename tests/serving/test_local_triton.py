"""Tests of devtools.local_triton against a real tritonserver.

Run: python -m pytest tests/serving/test_local_triton.py -p no:django -q
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
import tritonclient.http as httpclient

from devtools.local_triton import (
    SHM_DIR,
    SHM_PREFIX,
    LocalTriton,
    TritonInstall,
    TritonNotAvailable,
    TritonStartError,
    find_tritonserver,
    free_port,
)

pytestmark = pytest.mark.triton

REPO_ROOT = Path(__file__).resolve().parents[2]

MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            y = pb_utils.Tensor("Y", (x * 2).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[y]))
        return responses
"""

MODEL_CONFIG = {
    "backend": "python",
    "max_batch_size": 0,
    "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1]}],
    "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1]}],
    "instance_group": [{"kind": "KIND_CPU", "count": 1}],
}


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback: never through a proxy
    # An idle keep-alive connection makes Triton wait out its exit timeout.
    session.headers["Connection"] = "close"
    return session


def load_model(server: LocalTriton, name: str = "m") -> None:
    """Load the doubling model through the repository API's file override."""
    body = {
        "parameters": {
            "config": json.dumps(MODEL_CONFIG),
            "file:1/model.py": base64.b64encode(MODEL_PY.encode()).decode(),
        }
    }
    # A load can hang rather than fail when the stub cannot start: time out.
    resp = http().post(f"{server.http_url}/v2/repository/models/{name}/load", json=body, timeout=60)
    assert resp.status_code == 200, resp.text


def model_ready(server: LocalTriton, name: str = "m") -> bool:
    resp = http().get(f"{server.http_url}/v2/models/{name}/ready", timeout=5)
    return resp.status_code == 200


def stub_processes(server: LocalTriton) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(server.pid).children(recursive=True)
        if "triton_python_backend_stub" in " ".join(p.cmdline())
    ]


def shm_names_of(procs: list[psutil.Process]) -> set[str]:
    return {arg for p in procs for arg in p.cmdline() if arg.startswith(SHM_PREFIX)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    triton = LocalTriton(tmp_path_factory.mktemp("triton"))
    started = time.monotonic()
    triton.start()
    print(f"tritonserver ready in {time.monotonic() - started:.2f} s")
    yield triton
    triton.stop()


@pytest.fixture()
def running(server: LocalTriton) -> LocalTriton:
    """The module's server, started again if an earlier test left it down."""
    return server.start()


def test_find_tritonserver() -> None:
    install = find_tritonserver()
    assert isinstance(install, TritonInstall)
    assert os.access(install.binary, os.X_OK)
    assert (install.python_backend_src / "libtriton_python.so").is_file()
    assert install.stub.is_file()
    assert install.stub.parent.name == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert install.libs_dir.name == "nvidia_pytriton.libs"


def test_not_available_without_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pytriton" else real(name, *a),
    )
    with pytest.raises(TritonNotAvailable, match="pip install nvidia-pytriton"):
        find_tritonserver()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_health_metadata_and_metrics(running: LocalTriton) -> None:
    s = http()
    assert s.get(running.http_url + "/v2/health/ready", timeout=5).status_code == 200
    meta = s.get(running.http_url + "/v2", timeout=5).json()
    assert meta["version"] == "2.51.0"
    assert "model_repository" in meta["extensions"]
    metrics = s.get(running.metrics_url, timeout=5)
    assert metrics.status_code == 200
    assert "nv_cpu_utilization" in metrics.text
    assert running.http_url.startswith("http://127.0.0.1:")
    assert running.metrics_url.endswith("/metrics")
    workdir = running.workdir
    assert (workdir / "repository").is_dir()
    assert (workdir / "backends" / "python" / "triton_python_backend_stub").is_file()
    assert (workdir / "triton.log").stat().st_size > 0


def test_load_by_file_override_and_infer(running: LocalTriton) -> None:
    started = time.monotonic()
    load_model(running)
    print(f"model loaded in {time.monotonic() - started:.2f} s")
    assert model_ready(running)
    client = httpclient.InferenceServerClient(running.http_url.removeprefix("http://"))
    x = np.array([1.0, 2.5, -3.0], dtype=np.float32)
    inp = httpclient.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("m", [inp])
    np.testing.assert_allclose(result.as_numpy("Y"), x * 2)


def test_failed_load_keeps_server_ready(running: LocalTriton) -> None:
    body = {
        "parameters": {
            "config": json.dumps(MODEL_CONFIG),
            "file:1/model.py": base64.b64encode(b"def (").decode(),
        }
    }
    resp = http().post(running.http_url + "/v2/repository/models/broken/load", json=body, timeout=60)
    assert resp.status_code == 400
    assert "SyntaxError" in resp.text
    # --strict-readiness=false: one bad model does not make the server not-ready.
    assert running.is_ready()


def test_kill_then_restart_forgets_models(running: LocalTriton) -> None:
    if not model_ready(running):
        load_model(running)
    ports = (running.http_port, running.grpc_port, running.metrics_port)
    stubs = stub_processes(running)
    assert stubs, "a loaded python-backend model has a stub process"
    shm = shm_names_of(stubs)
    assert shm and all((SHM_DIR / name).exists() for name in shm)
    server_pid = running.pid

    running.kill()

    assert not running.is_running()
    assert not psutil.pid_exists(server_pid)
    _, alive = psutil.wait_procs(stubs, timeout=5)
    assert not alive
    assert not any((SHM_DIR / name).exists() for name in shm)

    started = time.monotonic()
    running.restart()
    print(f"restarted in {time.monotonic() - started:.2f} s")
    assert (running.http_port, running.grpc_port, running.metrics_port) == ports
    assert running.pid != server_pid
    assert running.is_ready()
    assert not model_ready(running)  # explicit mode: nothing is loaded again


def test_stop_ends_stub_children(running: LocalTriton) -> None:
    load_model(running, "s")
    stubs = stub_processes(running)
    shm = shm_names_of(stubs)
    assert stubs and shm
    running.stop()
    assert not running.is_running()
    _, alive = psutil.wait_procs(stubs, timeout=5)
    assert not alive
    assert not any((SHM_DIR / name).exists() for name in shm)


def test_port_in_use_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        triton = LocalTriton(tmp_path, http_port=port)
        with pytest.raises(TritonStartError, match="already in use"):
            triton.start(timeout=30)
    assert not triton.is_running()


def test_cli_runs_until_sigint(tmp_path: Path) -> None:
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.local_triton",
            "--workdir",
            str(tmp_path / "triton"),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(metrics_port),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "metrics:" in line:
                break
        output = "".join(lines)
        assert f"http://127.0.0.1:{http_port}" in output, output
        assert f"http://127.0.0.1:{metrics_port}/metrics" in output, output
        resp = http().get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=5)
        assert resp.status_code == 200
        server_pids = [p.pid for p in psutil.Process(proc.pid).children()]
        assert server_pids
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not any(psutil.pid_exists(pid) for pid in server_pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
