"""The gateway's own HTTP/1.1 server, at the socket: keep-alive, pipelining, chunked
bodies, 100-continue, HTTP/1.0, bad and oversized requests, clients that leave early;
and tokens used through the gateway marking their last use."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests
import tritonclient.http as triton_http
from django.db import connection
from django.utils import timezone

from devtools.local_triton import free_port
from modelhub.api.models import ApiToken
from modelhub.serving.models import InferenceServer, triton_model_name
from tests.gateway.conftest import MODEL

pytestmark = [pytest.mark.django_db(transaction=True)]


class Client:
    """A raw HTTP/1.1 connection: write bytes, read whole answers as they come."""

    def __init__(self, gateway):
        self.sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        status_line = self.file.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self.file.read(int(headers.get("content-length", 0)))
        return int(status_line.split()[1]), headers, body

    def closed_by_server(self) -> bool:
        self.sock.settimeout(5)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def post(path: str, body: bytes = b"{}", extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: gw\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body


def stats(gateway) -> dict:
    return requests.get(f"{gateway.url}/v2/modelhub/stats").json()


@pytest.fixture
def behind_fake(registered, gateway_factory, fake_triton):
    """The gateway (open) in front of a stand-in that answers with the path it was asked."""
    upstream = fake_triton("a")
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=upstream.url)
    return gateway_factory(auth_open=True), upstream


def test_a_kept_alive_connection_serves_many_requests_over_one_upstream_connection(behind_fake):
    gateway, upstream = behind_fake
    client = Client(gateway)

    for _ in range(5):
        client.send(post(f"/v2/models/{MODEL}/infer"))
        status, headers, body = client.answer()
        assert status == 200 and json.loads(body)["served_by"] == "a"
        assert "connection" not in headers  # Triton's answer as it was: nothing about closing

    assert upstream.hits == 5
    connections = stats(gateway)["connections"]
    assert connections["upstream_opened"] == 1  # the pool reused one connection to Triton
    assert connections["clients"] == 2  # this one, still open, and the stats request's
    client.close()


def test_pipelined_requests_are_answered_in_order(behind_fake):
    gateway, _ = behind_fake
    client = Client(gateway)
    paths = [f"/v2/models/{MODEL}/versions/2/infer", f"/v2/models/{MODEL}/infer", f"/v2/models/{MODEL}/versions/1"]

    client.send(b"".join(post(path) for path in paths) + b"GET /v2/health/live HTTP/1.1\r\nHost: gw\r\n\r\n")

    answered = [json.loads(client.answer()[2])["path"] for _ in paths]
    to_triton = {2: triton_model_name(MODEL, 2), 1: triton_model_name(MODEL, 1)}
    assert answered == [
        f"/v2/models/{to_triton[2]}/versions/2/infer",
        f"/v2/models/{to_triton[1]}/versions/1/infer",
        f"/v2/models/{to_triton[1]}/versions/1",
    ]
    assert client.answer()[0] == 200  # the gateway's own answer, after Triton's
    client.close()


@pytest.mark.triton
def test_a_chunked_request_body_reaches_triton_whole(served, gateway_factory):
    gateway = gateway_factory(auth_open=True)
    body = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]}]}).encode()
    chunks = [body[:10], body[10:25], body[25:]]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    client = Client(gateway)

    head = f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    client.send(head)
    for piece in (encoded[:7], encoded[7:30], encoded[30:]):  # chunks split across reads, too
        client.send(piece)
        time.sleep(0.02)

    status, _, answer = client.answer()
    assert status == 200, answer
    assert json.loads(answer)["outputs"][0]["data"] == [2, 4, 6]
    client.close()


@pytest.mark.triton
def test_a_large_binary_tensor_round_trips(served, gateway_factory):
    gateway = gateway_factory(auth_open=True)
    client = triton_http.InferenceServerClient(gateway.address, network_timeout=60)
    data = np.arange(2_000_000, dtype=np.float32)  # 8 MB each way
    tensor = triton_http.InferInput("INPUT", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=True)
    output = triton_http.InferRequestedOutput("OUTPUT", binary_data=True)

    result = client.infer(MODEL, [tensor], outputs=[output]).as_numpy("OUTPUT")

    np.testing.assert_array_equal(result, data * 2)


def test_expect_100_continue_is_answered_before_the_body(behind_fake):
    gateway, upstream = behind_fake
    client = Client(gateway)
    body = b'{"inputs": []}'

    client.send(
        f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    assert client.file.readline() == b"HTTP/1.1 100 Continue\r\n" and client.file.readline() == b"\r\n"
    client.send(body)

    assert client.answer()[0] == 200 and upstream.hits == 1
    client.close()


def test_an_http_1_0_request_gets_its_answer_and_the_connection_closes(behind_fake):
    gateway, _ = behind_fake
    client = Client(gateway)

    client.send(f"POST /v2/models/{MODEL}/infer HTTP/1.0\r\nContent-Length: 2\r\n\r\n{{}}".encode())

    status, headers, body = client.answer()
    assert status == 200 and json.loads(body)["served_by"] == "a"
    assert headers["connection"] == "close"
    assert client.closed_by_server()


def test_a_malformed_request_is_a_400_and_closes(behind_fake):
    gateway, upstream = behind_fake
    client = Client(gateway)

    client.send(b"POST /v2/models/x/infer HTTP/1.1\r\nContent-Length: nope\r\n\r\n")

    status, headers, body = client.answer()
    assert status == 400 and json.loads(body)["error"].startswith("malformed HTTP request")
    assert headers["connection"] == "close" and client.closed_by_server()
    assert upstream.hits == 0


def test_a_body_over_the_limit_is_a_413_before_it_is_read(registered, gateway_factory, fake_triton):
    upstream = fake_triton("a")
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=upstream.url)
    gateway = gateway_factory(auth_open=True, max_body=1000)
    declared, chunked = Client(gateway), Client(gateway)

    declared.send(f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nContent-Length: 1001\r\n\r\n".encode())
    chunked.send(f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    chunked.send(b"3e8\r\n" + b"x" * 1000 + b"\r\n1\r\nx\r\n")

    for client in (declared, chunked):
        status, _, body = client.answer()
        assert status == 413
        assert json.loads(body)["error"] == "request body over 1000 bytes (MODELHUB_GATEWAY_MAX_BODY_BYTES)"
        assert client.closed_by_server()
    assert upstream.hits == 0
    assert requests.post(f"{gateway.url}/v2/models/{MODEL}/infer", data=b"x" * 1000).status_code == 200


def test_clients_that_leave_early_leave_nothing_behind(registered, gateway_factory, fake_triton):
    upstream = fake_triton("a")
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=upstream.url)
    gateway = gateway_factory(auth_open=True)

    halfway = Client(gateway)  # gone in the middle of its body
    halfway.send(f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nContent-Length: 100\r\n\r\n{{".encode())
    before_answer = Client(gateway)  # gone while Triton answers
    before_answer.send(post(f"/v2/models/{MODEL}/infer"))
    halfway.close()
    before_answer.close()

    gateway.wait_for(lambda: upstream.hits == 1, what="the whole request reaching Triton")
    gateway.wait_for(lambda: stats(gateway)["connections"]["clients"] == 1, what="closed clients forgotten")
    # Triton's answer to a client that left still ends its exchange: the connection is pooled again.
    gateway.wait_for(lambda: stats(gateway)["connections"]["upstream_idle"] == 1, what="the upstream connection pooled")
    assert requests.post(f"{gateway.url}/v2/models/{MODEL}/infer", data=b"{}").status_code == 200
    assert stats(gateway)["connections"]["upstream_opened"] == 1


def test_a_client_gone_while_triton_is_silent_costs_one_timeout_and_no_connection(
    registered, gateway_factory, silent_server
):
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=silent_server)
    gateway = gateway_factory(auth_open=True, timeout_s=0.3)
    client = Client(gateway)
    client.send(post(f"/v2/models/{MODEL}/infer"))
    time.sleep(0.05)
    client.close()

    gateway.wait_for(lambda: stats(gateway)["requests"]["timeouts"] == 1, what="the exchange timing out")
    connections = stats(gateway)["connections"]
    assert connections["clients"] == 1 and connections["upstream_idle"] == 0  # the silent connection is closed


# --- tokens' last use ----------------------------------------------------------------------------


def test_a_token_used_through_the_gateway_gets_its_last_use_recorded_off_the_request_path(
    registered, gateway_factory, fake_triton, token_for
):
    upstream = fake_triton("a")
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=upstream.url)
    used, used_text = token_for("infer")
    idle, _ = token_for("infer", role="admin")
    recently = timezone.now() - timedelta(seconds=10)
    recent, recent_text = token_for("infer", models=[registered["model"]])
    ApiToken.objects.filter(pk=recent.pk).update(last_used_at=recently)
    gateway = gateway_factory()

    for text in (used_text, recent_text):
        response = requests.post(
            f"{gateway.url}/v2/models/{MODEL}/infer", data=b"{}", headers={"Authorization": f"Bearer {text}"}
        )
        assert response.status_code == 200

    gateway.wait_for(lambda: ApiToken.objects.get(pk=used.pk).last_used_at is not None, what="last_used_at written")
    assert timezone.now() - ApiToken.objects.get(pk=used.pk).last_used_at < timedelta(seconds=5)
    time.sleep(0.5)  # more refreshes (0.2 s each)
    assert ApiToken.objects.get(pk=idle.pk).last_used_at is None  # never used
    # Used 10 s ago already: at most once a minute, as the REST API.
    assert ApiToken.objects.get(pk=recent.pk).last_used_at == recently


# --- the entry point -------------------------------------------------------------------------------


class SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(0.5)  # still answering when the gateway is told to stop
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")

    def log_message(self, *args):
        pass


def test_python_m_modelhub_gateway_serves_and_stops_gracefully_on_sigterm(registered):
    slow = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=f"http://127.0.0.1:{slow.server_port}")
    port = free_port()
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "modelhub.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
        "MODELHUB_GATEWAY_AUTH": "open",
    }
    process = subprocess.Popen([sys.executable, "-m", "modelhub.gateway", "--port", str(port)], env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            assert process.poll() is None and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        answers = []
        during = threading.Thread(target=lambda: answers.append(requests.post(f"{url}/v2/models/{MODEL}/infer")))
        during.start()
        time.sleep(0.2)  # the request is with the slow server now

        process.send_signal(signal.SIGTERM)

        during.join(10)
        assert [a.status_code for a in answers] == [200]  # answered, not cut off
        assert process.wait(10) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/v2/health/live", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
        slow.shutdown()
        slow.server_close()
