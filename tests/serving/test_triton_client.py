"""The one Triton client: real answers, and failures that say server, call and cause."""

import socket
import threading
import time

import numpy as np
import pytest

from modelhub.serving.triton_client import TritonClient, TritonError, TritonUnavailable
from tests.conftest import doubler_source

pytestmark = pytest.mark.triton

CONFIG = {
    "name": "client-doubler",
    "backend": "python",
    "max_batch_size": 0,
    "input": [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [-1]}],
    "output": [{"name": "OUTPUT", "data_type": "TYPE_FP32", "dims": [-1]}],
}


@pytest.fixture
def client(triton):
    c = TritonClient("session", triton.http_url, triton.metrics_url, timeout=5, load_timeout=60)
    yield c
    c.close()


def test_health_metadata_load_infer_statistics_metrics_and_unload(client):
    assert client.health().live and client.health().ready
    assert client.server_metadata()["version"] == "2.51.0"

    client.load("client-doubler", CONFIG, {"1/model.py": doubler_source(2).encode()})
    assert client.served_versions("client-doubler") == {1}
    assert client.model_metadata("client-doubler")["inputs"][0]["datatype"] == "FP32"
    assert client.model_config("client-doubler")["backend"] == "python"

    out = client.infer("client-doubler", 1, {"INPUT": np.array([1.5, 2.0], dtype=np.float32)}, {"INPUT": "FP32"})
    assert out["OUTPUT"].tolist() == [3.0, 4.0]

    # Triton counts a request just after it has answered it.
    def successes() -> int:
        return int(client.statistics("client-doubler")["model_stats"][0]["inference_stats"]["success"]["count"])

    deadline = time.monotonic() + 5
    while successes() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert successes() == 1
    families = {f.name: f for f in client.scrape_metrics()}
    success = [s for s in families["nv_inference_request_success"].samples if s.labels["model"] == "client-doubler"]
    assert success and success[0].value == 1.0

    client.unload("client-doubler")
    deadline = time.monotonic() + 10
    while client.served_versions("client-doubler") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.served_versions("client-doubler") == set()


def test_tritons_own_error_text_is_kept_with_server_and_call(client):
    with pytest.raises(TritonError) as err:
        client.model_config("no-such-model")
    assert not isinstance(err.value, TritonUnavailable)
    assert "Triton server 'session': model config (no-such-model) failed" in str(err.value)
    assert "no-such-model" in err.value.detail


def test_a_server_that_never_answers_times_out_as_unavailable():
    # Accepts connections and then says nothing, like a Triton stuck in a load.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    threading.Thread(target=lambda: held.extend(listener.accept() for _ in range(4)), daemon=True).start()
    port = listener.getsockname()[1]
    client = TritonClient("stuck", f"http://127.0.0.1:{port}", timeout=0.5, load_timeout=1)

    started = time.monotonic()
    with pytest.raises(TritonUnavailable) as err:
        client.load("m", CONFIG, {"1/model.py": b"pass"})
    assert time.monotonic() - started < 5
    assert "Triton server 'stuck': load (m) failed" in str(err.value)
    assert "no answer within 1 s" in str(err.value)
    listener.close()


def test_a_closed_port_is_unavailable_and_names_the_url():
    client = TritonClient("closed", "http://127.0.0.1:9", timeout=1)
    with pytest.raises(TritonUnavailable) as err:
        client.health()
    assert "http://127.0.0.1:9" in str(err.value) and "refused" in str(err.value).lower()
