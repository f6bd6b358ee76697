"""The gateway's own server in a thread, a doubler model loaded on the session Triton
once, and stand-in servers (counting, silent, absent) for what Triton cannot fake."""

import json
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import tritonclient.http as triton_http
from django.contrib.auth.models import Group, User
from django.utils import timezone

from devtools.local_triton import free_port
from modelhub.api.tokens import issue_token
from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.gateway.app import create_app
from modelhub.gateway.server import Server
from modelhub.registry.services import get_or_create_model, move_alias, register_version
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState, triton_model_name
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip

MODEL = "gw-double"
FACTORS = {1: 2, 2: 3}  # version -> what it multiplies by
ACTOR = Actor(source=Source.CLI)


@pytest.fixture(scope="session")
def doubler_on_triton(triton):
    """gw-double versions 1 (x2) and 2 (x3) loaded on the session Triton, straight through
    its repository API, each under its own Triton name as the reconciler loads them
    (`gw-double__v1` serving version 1, `gw-double__v2` version 2): the gateway reads only
    the rows, so tests write rows that say so."""
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    for version, factor in FACTORS.items():
        name = triton_model_name(MODEL, version)
        config = {
            "name": name,
            "backend": "python",
            "max_batch_size": 0,
            "input": [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [-1]}],
            "output": [{"name": "OUTPUT", "data_type": "TYPE_FP32", "dims": [-1]}],
            "version_policy": {"specific": {"versions": [version]}},
        }
        files = {f"file:{version}/model.py": doubler_source(factor).encode()}
        client.load_model(name, config=json.dumps(config), files=files)
    client.close()
    return triton


@pytest.fixture
def registered(db, tmp_path):
    """Registry rows for gw-double v1 and v2, both loaded on server "local", production -> v1.

    "local" points nowhere: tests point it at a real Triton (`served`) or a stand-in."""
    server = InferenceServer.objects.create(name="local", base_url=f"http://127.0.0.1:{free_port()}", live=True)
    model = get_or_create_model(MODEL, ACTOR)
    versions = {}
    for number, factor in FACTORS.items():
        artifact = make_zip(tmp_path / f"v{number}.zip", {"1/model.py": doubler_source(factor)})
        versions[number] = register_version(model, artifact, dict(DOUBLER_MANIFEST), ACTOR).version
        assert versions[number].number == number
        mark_loaded(versions[number], server)
    move_alias(model, "production", versions[1], ACTOR)
    return {"server": server, "model": model, "versions": versions}


@pytest.fixture
def served(registered, doubler_on_triton):
    """`registered`, with server "local" being the session's real Triton."""
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=doubler_on_triton.http_url)
    return registered | {"triton": doubler_on_triton}


def mark_loaded(version, server) -> Deployment:
    return Deployment.objects.create(
        version=version, server=server, desired=DesiredState.LOADED, observed=ObservedState.LOADED
    )


class RunningGateway:
    def __init__(self, app, port: int):
        self.app = app
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.url = f"http://{self.address}"

    def wait_for(self, condition, timeout: float = 3.0, what: str = "condition") -> float:
        """Seconds until `condition()` holds; fails after `timeout`."""
        started = time.monotonic()
        while not condition():
            assert time.monotonic() - started < timeout, f"{what} did not happen within {timeout} s"
            time.sleep(0.02)
        return time.monotonic() - started


@pytest.fixture
def gateway_factory():
    """gateway_factory(**config overrides) -> a RunningGateway on a free port."""
    running = []

    def start(**overrides) -> RunningGateway:
        overrides.setdefault("refresh_s", 0.2)
        app = create_app(**overrides)
        port = free_port()
        server = Server(app, "127.0.0.1", port, app.config.max_body)
        server.start_in_thread()
        running.append(server)
        return RunningGateway(app, port)

    yield start
    for server in running:
        server.stop()
        server.join(timeout=10)


@pytest.fixture
def person(db):
    def make(username: str, role: str) -> User:
        user = User.objects.create_user(username)
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        return user

    return make


@pytest.fixture
def token_for(person):
    """token_for("infer", role="operator") -> the token's text (and the token row as .row)."""

    def make(*scopes: str, role: str = "operator", models=()):
        user = person(f"{role}-{'-'.join(scopes)}-{len(models)}", role)
        token, text = issue_token(
            name=f"app-{'-'.join(scopes)}",
            user=user,
            scopes=scopes,
            models=models,
            expires_at=timezone.now() + timedelta(days=1),
            actor=ACTOR,
        )
        return token, text

    return make


class FakeTriton:
    """An HTTP/1.1 server that answers every request 200 with its own name, counting them."""

    def __init__(self, name: str):
        self.name = name
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Triton

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.hits += 1
                body = json.dumps({"served_by": outer.name, "path": self.path}).encode()
                # One write, as Triton: separate header and body writes meet delayed ACKs (40 ms).
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                self.wfile.write(head.encode() + body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_triton():
    made = []

    def make(name: str) -> FakeTriton:
        made.append(FakeTriton(name))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers: the URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
