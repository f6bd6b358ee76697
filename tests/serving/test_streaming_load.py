"""Load requests are streamed: the same bytes as tritonclient's, memory flat, a size cap."""

import contextlib
import hashlib
import io
import json
import os
import threading
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tritonclient.http as triton_http

from modelhub.lib import archives
from modelhub.registry.services import get_or_create_model, register_version
from modelhub.serving import triton_client
from modelhub.serving.models import InferenceServer, ObservedState
from modelhub.serving.services import request_deploy
from modelhub.serving.triton_client import FileGroup, TritonClient, TritonError
from tests.conftest import make_tar_gz, make_zip


class CaptureServer:
    """A loopback HTTP server that records each POST (or only its length and
    sha256, for big ones) and answers with a chosen status and body."""

    def __init__(self, keep_bodies: bool = True, status: int = 200, answer: bytes = b"{}"):
        self.requests: list[dict] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                digest, body, left = hashlib.sha256(), bytearray(), length
                while left and (chunk := self.rfile.read(min(left, 1 << 20))):
                    left -= len(chunk)
                    digest.update(chunk)
                    if keep_bodies:
                        body += chunk
                capture.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "content_length": length,
                        "received": length - left,
                        "sha256": digest.hexdigest(),
                        "body": bytes(body),
                    }
                )
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def capture():
    servers = []

    def start(**kwargs) -> CaptureServer:
        servers.append(CaptureServer(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# A config with what JSON escaping can differ on: quotes, slashes, backslashes,
# non-ASCII (rapidjson writes \u00E9, json \u00e9), a line separator.
CONFIG = {
    "name": "stream-me",
    "backend": "python",
    "max_batch_size": 0,
    "input": [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [-1]}],
    "output": [{"name": "OUTPUT", "data_type": "TYPE_FP32", "dims": [-1]}],
    "parameters": {"note": {"string_value": 'café "quoted" a/b c\\d \u2028 \U0001f600'}},
}


class Trickle(io.RawIOBase):
    """A stream that answers reads a few bytes at a time, like a pipe."""

    def __init__(self, data: bytes, step: int = 7):
        self._data, self._step = memoryview(data), step

    def readable(self):
        return True

    def read(self, n=-1):
        n = self._step if n is None or n < 0 else min(n, self._step)
        out, self._data = bytes(self._data[:n]), self._data[n:]
        return out


def groups_of(files: dict[str, bytes]) -> list[FileGroup]:
    """Three groups: in memory, one streamed a few bytes per read, the rest in memory."""
    first, trickled, *rest = files
    return [
        FileGroup.in_memory({first: files[first]}),
        FileGroup({trickled: len(files[trickled])}, lambda: _streams({trickled: Trickle(files[trickled])})),
        FileGroup.in_memory({name: files[name] for name in rest}),
    ]


def test_the_streamed_body_is_byte_for_byte_what_tritonclient_sends(capture, monkeypatch):
    # Tiny chunks, so every file spans several of them; sizes around multiples of 3.
    monkeypatch.setattr(triton_client, "B64_CHUNK_BYTES", 3 * 5)
    files = {
        "1/model.py": b"print('hello')\n" * 7,
        "1/weights/data.bin": os.urandom(1000),
        "1/empty.txt": b"",
        "labels.txt": "chat\ncafé\n".encode(),
        "extras/vocab é.txt": os.urandom(31),
    }
    server = capture()

    TritonClient("capture", server.url, timeout=5, load_timeout=5).load("stream-me", CONFIG, groups_of(files))
    reference = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    reference.load_model("stream-me", config=json.dumps(CONFIG), files={f"file:{p}": d for p, d in files.items()})
    reference.close()

    ours, theirs = server.requests
    assert ours["path"] == theirs["path"] == "/v2/repository/models/stream-me/load"
    assert ours["content_length"] == len(ours["body"]) == len(theirs["body"])
    assert ours["body"] == theirs["body"]


def test_tritons_error_text_is_kept(capture):
    answer = b'{"error":"load failed for model \'m\': version 1 is at UNAVAILABLE state: SyntaxError"}'
    server = capture(status=400, answer=answer)
    with pytest.raises(TritonError) as err:
        TritonClient("capture", server.url, timeout=5, load_timeout=5).load("m", CONFIG, {"1/model.py": b"x"})
    assert err.value.status == "400"
    assert err.value.detail == "load failed for model 'm': version 1 is at UNAVAILABLE state: SyntaxError"
    assert "Triton server 'capture': load (m) failed" in str(err.value)


def test_a_file_shorter_than_announced_fails_the_load_and_names_the_file(capture):
    server = capture()
    short = FileGroup({"1/weights.bin": 100}, lambda: _streams({"1/weights.bin": io.BytesIO(b"x" * 60)}))
    with pytest.raises(TritonError) as err:
        TritonClient("capture", server.url, timeout=5, load_timeout=5).load("m", CONFIG, [short])
    assert "load (m) failed: nothing was loaded" in str(err.value)
    assert "'1/weights.bin' has 60 bytes, not its announced 100" in str(err.value)
    assert all(r["received"] < r["content_length"] for r in server.requests)  # Triton never sees a whole body


def test_a_load_over_the_size_cap_fails_before_sending_and_says_why(capture, settings):
    settings.MAX_LOAD_BYTES = 1000
    server = capture()
    with pytest.raises(TritonError) as err:
        TritonClient("capture", server.url, timeout=5).load("big-one", CONFIG, {"1/model.bin": b"x" * 1001})
    message = str(err.value)
    assert "load (big-one) failed" in message and "1001 bytes" in message and "MODELHUB_MAX_LOAD_BYTES" in message
    assert "model repository" in message
    assert server.requests == []


def test_memory_does_not_grow_with_the_file(capture, tmp_path):
    size = 48 * 1024 * 1024
    path = tmp_path / "weights.bin"
    with open(path, "wb") as fh:
        for _ in range(size // (1 << 20)):
            fh.write(os.urandom(1 << 20))

    def open_weights():
        return _streams({"1/weights.bin": open(path, "rb")})  # _streams closes it

    group = FileGroup({"1/weights.bin": size}, open_weights)
    server = capture(keep_bodies=False)
    client = TritonClient("capture", server.url, timeout=30, load_timeout=30)

    tracemalloc.start()
    try:
        client.load("big", CONFIG, [group])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    (request,) = server.requests
    assert request["received"] == request["content_length"] > size * 4 // 3
    assert peak < 8 * 1024 * 1024, f"the load allocated {peak / 2**20:.1f} MiB at its peak for a 48 MiB file"


def _streams(streams: dict):
    @contextlib.contextmanager
    def opened():
        try:
            yield streams.items()
        finally:
            for stream in streams.values():
                stream.close()

    return opened()


# --- the real thing: a multi-file model through the reconciler into Triton --------

# model.py reads a factor from a version-level data file and counts the lines
# of a model-level labels file: both must arrive intact for the answer to be right.
MULTI_FILE_MODEL_PY = """
import os
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, "data", "factor.bin"), "rb") as fh:
            self.factor = float(np.frombuffer(fh.read(8), dtype=np.float64)[0])
            self.tail = fh.read()  # the rest: random bytes, to make the file big
        with open(os.path.join(args["model_repository"], "labels.txt")) as fh:
            self.labels = len(fh.read().splitlines())

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            y = x * self.factor + self.labels + len(self.tail) % 7
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", y.astype(np.float32))]))
        return responses
"""


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("packer", [make_zip, make_tar_gz], ids=["zip", "tar.gz"])
def test_a_multi_file_model_is_streamed_into_triton_and_answers(triton, actor, manifest, tmp_path, packer):
    tail = os.urandom(3 * 1024 * 1024 + 1)  # spans several base64 chunks, not a multiple of 3
    artifact = packer(
        tmp_path / f"multi.{packer.__name__}",
        {
            "1/model.py": MULTI_FILE_MODEL_PY,
            "1/data/factor.bin": np.array([2.5], dtype=np.float64).tobytes() + tail,
            "labels.txt": "cat\ndog\nbird\n",
        },
    )
    name = f"multi-{packer.__name__.replace('_', '-')}"
    version = register_version(get_or_create_model(name, actor), artifact, manifest, actor).version
    server = InferenceServer.objects.create(name="local", base_url=triton.http_url, metrics_url=triton.metrics_url)

    [deployment] = request_deploy(version, [server], actor)  # eager Celery: reconciles on commit

    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    client = TritonClient.for_server(server)
    served = f"{name}__v{version.number}"  # the version's own Triton name
    out = client.infer(served, version.number, {"INPUT": np.array([1.0, 2.0], dtype=np.float32)}, {"INPUT": "FP32"})
    assert out["OUTPUT"].tolist() == [2.5 + 3 + len(tail) % 7, 5.0 + 3 + len(tail) % 7]
    client.unload(served)


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)
def test_a_version_over_the_load_cap_fails_its_deployment_with_the_reason(
    triton, actor, manifest, doubler_zip, settings
):
    version = register_version(get_or_create_model("too-big", actor), doubler_zip(2), manifest, actor).version
    server = InferenceServer.objects.create(name="local", base_url=triton.http_url, metrics_url=triton.metrics_url)
    settings.MAX_LOAD_BYTES = 10

    [deployment] = request_deploy(version, [server], actor)

    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.FAILED
    assert "load (too-big__v1) failed" in deployment.last_error
    assert "MODELHUB_MAX_LOAD_BYTES" in deployment.last_error
    assert f"{version.version_files['model.py']} bytes" in deployment.last_error


@pytest.mark.parametrize("packer", [make_zip, make_tar_gz], ids=["zip", "tar.gz"])
def test_an_archive_member_is_streamed_with_its_listed_size_and_a_changed_one_is_refused(tmp_path, packer):
    files = {"1/model.py": "print(1)\n", "1/data.bin": os.urandom(5000), "labels.txt": "a\nb\n"}
    path = packer(tmp_path / "artifact", files)
    folder = archives.list_archive(path)
    assert folder.version_files == {"model.py": 9, "data.bin": 5000} and folder.model_files == {"labels.txt": 4}

    with contextlib.closing(archives.iter_member_streams(path, folder, {("version", "data.bin")})) as members:
        [(kind, relpath, stream)] = list(_read_all(members))
    assert (kind, relpath, stream) == ("version", "data.bin", files["1/data.bin"])

    packer(path, {**files, "1/data.bin": os.urandom(4000)})  # replaced behind ModelHub's back
    with pytest.raises(archives.ArchiveError, match="changed since it was inspected") as err:
        list(_read_all(archives.iter_member_streams(path, folder)))
    assert err.value.member.endswith("1/data.bin")


def _read_all(members):
    for kind, relpath, stream in members:
        data = b""
        while chunk := stream.read(1000):
            data += chunk
        yield kind, relpath, data
