"""Server URLs: the networks Triton and metrics URLs may reach (MODELHUB_TRITON_ALLOWED_NETWORKS),
checked when connecting, and no credentials inside a URL."""

import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError

from modelhub.lib.networks import AddressNotAllowed, check_resolved
from modelhub.serving.models import InferenceServer
from modelhub.serving.triton_client import TritonClient, TritonUnavailable

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]
ELSEWHERE = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


def info(address: str, port: int = 8000) -> tuple:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return (family, socket.SOCK_STREAM, 6, "", (address, port))


def test_every_address_a_name_resolves_to_must_be_allowed():
    both = [info("10.1.2.3"), info("169.254.169.254")]  # a name that also points at the metadata service

    with pytest.raises(AddressNotAllowed) as refused:
        check_resolved("triton.internal", both, ELSEWHERE)

    said = str(refused.value)
    assert "169.254.169.254" in said and "MODELHUB_TRITON_ALLOWED_NETWORKS" in said and "10.0.0.0/8" in said
    assert check_resolved("triton.internal", both[:1], ELSEWHERE) == both[:1]
    assert check_resolved("triton.internal", both, []) == both  # no list: any address
    assert check_resolved("t", [info("::ffff:10.9.9.9"), info("fd00::5")], ELSEWHERE)  # mapped IPv4 is IPv4
    with pytest.raises(AddressNotAllowed):
        check_resolved("t", [info("::ffff:127.0.0.1")], ELSEWHERE)


class Stand:
    """A real HTTP server on loopback that answers 200 to anything and counts connections."""

    def __init__(self):
        stand = self
        self.connections = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"# HELP nv_up up\n# TYPE nv_up gauge\nnv_up 1\n" if self.path == "/metrics" else b"{}"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.do_GET()

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def get_request(self):
                stand.connections += 1
                return super().get_request()

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand():
    s = Stand()
    yield s
    s.close()


def client_for(stand, host="127.0.0.1") -> TritonClient:
    url = f"http://{host}:{stand.port}"
    return TritonClient("edge-a", url, f"{url}/metrics", timeout=5)


def test_a_connection_outside_the_allowed_networks_is_never_made_and_the_error_names_address_and_setting(
    stand, settings
):
    settings.TRITON_ALLOWED_NETWORKS = ELSEWHERE
    client = client_for(stand)

    calls = {
        "health": client.health,
        "load": lambda: client.load("m", {"backend": "python"}, {"1/model.py": b"pass\n"}),
        "metrics scrape": client.scrape_metrics,
    }
    for call, run in calls.items():
        with pytest.raises(TritonUnavailable) as refused:
            run()
        said = str(refused.value)
        assert "127.0.0.1 is not in MODELHUB_TRITON_ALLOWED_NETWORKS (10.0.0.0/8, fd00::/8)" in said, (call, said)
        assert "edge-a" in said
    assert stand.connections == 0
    client.close()


def test_inside_the_allowed_networks_by_address_or_by_name_the_calls_go_through(stand, settings):
    settings.TRITON_ALLOWED_NETWORKS = LOOPBACK

    for host in ("127.0.0.1", "localhost"):
        client = client_for(stand, host)
        assert client.health().live
        client.load("m", {"backend": "python"}, {"1/model.py": b"pass\n"})
        assert [f.name for f in client.scrape_metrics()] == ["nv_up"]
        client.close()
    assert stand.connections >= 6


@pytest.mark.parametrize("field", ["base_url", "metrics_url"])
def test_a_server_url_with_credentials_is_refused_naming_the_field_without_the_password(field):
    fields = {"base_url": "http://triton-a:8000", field: "http://ops:hunter2@triton-a:8000/metrics"}
    server = InferenceServer(name="gpu-a", **fields)

    with pytest.raises(ValidationError) as refused:
        server.full_clean(validate_unique=False)

    [message] = refused.value.message_dict[field]
    assert "must not contain a user name or password" in message
    assert "hunter2" not in message and "***@triton-a:8000" in message
