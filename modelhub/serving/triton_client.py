"""ModelHub's only client of Triton's HTTP API.

Everything that talks to a Triton server goes through TritonClient. Each call
has a timeout (a load can hang for ever when a backend stub cannot start) and
every failure becomes a TritonError whose message says which server, which
call and what Triton said, ready to be stored and shown to an operator.
"""

import base64
import http.client
import io
import json
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import IO
from urllib.parse import quote, urlsplit

import gevent
import gevent.socket
import gevent.ssl
import numpy as np
import rapidjson
import tritonclient.http as triton_http
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.http._utils import _raise_if_error  # tritonclient's own reading of Triton's {"error": ...}
from tritonclient.utils import InferenceServerException

from modelhub.lib.networks import check_resolved, resolve_allowed
from modelhub.lib.urls import hide_credentials


class TritonError(Exception):
    """A Triton call failed. `status` is Triton's HTTP status where it answered."""

    def __init__(self, server: str, call: str, detail: str, status: str | None = None):
        self.server, self.call, self.detail, self.status = server, call, detail, status
        super().__init__(f"Triton server {server!r}: {call} failed: {detail}")


class TritonUnavailable(TritonError):
    """The server did not answer at all (refused, unreachable, timed out)."""

    timed_out = False  # True: it stayed silent past the timeout (it may still be working)


@dataclass(frozen=True)
class Health:
    live: bool
    ready: bool


def _hostport(base_url: str) -> tuple[str, bool]:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{base_url!r} is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}", parts.scheme == "https"


# --- load requests, streamed ---------------------------------------------------
# A load carries every file of the model base64-encoded inside one JSON body.
# Built whole, that body holds a model several times over in memory (bytes,
# base64, JSON text, encoded body); streamed, a load needs a few chunks.

# Raw bytes encoded at a time: a multiple of 3, so every chunk but the last
# encodes without padding and the chunks join into one valid base64 text.
B64_CHUNK_BYTES = 3 * 256 * 1024


def base64_length(size: int) -> int:
    """Length of the base64 text of `size` bytes (padded)."""
    return 4 * -(-size // 3)


@dataclass(frozen=True)
class FileGroup:
    """Files of one load read one after another from one source (a stored archive, memory).

    `sizes` maps each path in the model folder ("1/model.onnx", "labels.txt")
    to its size in bytes, known before anything is read. `open()` is a
    context manager yielding `(path, binary stream)` once for each of them.
    """

    sizes: Mapping[str, int]
    open: Callable[[], AbstractContextManager[Iterable[tuple[str, IO[bytes]]]]]

    @classmethod
    def in_memory(cls, files: Mapping[str, bytes]) -> "FileGroup":
        """Small files made on the spot (a generated model.py, labels)."""
        files = dict(files)

        @contextmanager
        def open_streams() -> Iterator[Iterable[tuple[str, IO[bytes]]]]:
            yield ((path, io.BytesIO(data)) for path, data in files.items())

        return cls({path: len(data) for path, data in files.items()}, open_streams)


class LoadFileError(Exception):
    """A file of a load could not be read as announced (missing, changed, corrupt)."""


class LoadRequestBody:
    """The JSON body of a load request, produced while it is sent.

    Byte for byte what tritonclient.http's `load_model(config=json.dumps(config),
    files={"file:<path>": bytes})` sends (it dumps with rapidjson: no spaces,
    ASCII escapes), but each file is read and base64-encoded a chunk at a time.
    `len()` is exact before a byte is read, so it goes out with a
    Content-Length; iterating yields the body in pieces of about 1 MiB.
    Files are sent group by group, in the order each group yields them.
    """

    def __init__(self, config: Mapping, groups: Sequence[FileGroup]):
        self._groups = list(groups)
        self._head = b'{"parameters":{"config":' + _json_string(json.dumps(config))
        self.file_sizes: dict[str, int] = {}
        for group in self._groups:
            for path, size in group.sizes.items():
                if path in self.file_sizes:
                    raise ValueError(f"file {path!r} is given twice in one load")
                self.file_sizes[path] = size
        self._length = len(self._head) + len(b"}}")
        for path, size in self.file_sizes.items():
            self._length += len(self._key(path)) + base64_length(size) + len(b'"')
        self._chunks = self._produce()

    def __len__(self) -> int:
        return self._length

    @property
    def files_size(self) -> int:
        return sum(self.file_sizes.values())

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks  # once only: the files are read as it goes

    def close(self) -> None:
        self._chunks.close()  # releases an open archive if the send stopped half way

    @staticmethod
    def _key(path: str) -> bytes:
        return b"," + _json_string(f"file:{path}") + b':"'

    def _produce(self) -> Iterator[bytes]:
        yield self._head
        for group in self._groups:
            left = dict(group.sizes)
            try:
                with group.open() as streams:
                    for path, stream in streams:
                        if path not in left:
                            raise LoadFileError(f"file {path!r} was not announced, or came twice")
                        yield self._key(path)
                        yield from _base64_chunks(stream, left.pop(path), path)
                        yield b'"'
            except (OSError, ValueError) as exc:  # OSError: a missing file; ValueError: archive errors
                raise LoadFileError(f"cannot read the model's files: {exc}") from exc
            if left:
                raise LoadFileError(f"file {next(iter(left))!r} was announced but not read")
        yield b"}}"


def _json_string(text: str) -> bytes:
    # rapidjson, as tritonclient: its escapes (e.g. "\u00E9") differ from json's ("\u00e9").
    return rapidjson.dumps(text).encode("ascii")


def _base64_chunks(stream: IO[bytes], size: int, path: str) -> Iterator[bytes]:
    got = 0
    while True:
        chunk = _read_full(stream, B64_CHUNK_BYTES)
        got += len(chunk)
        if got > size:
            raise LoadFileError(f"file {path!r} is longer than its announced {size} bytes")
        if not chunk:
            break
        yield base64.b64encode(chunk)
    if got != size:
        raise LoadFileError(f"file {path!r} has {got} bytes, not its announced {size}")


def _read_full(stream: IO[bytes], n: int) -> bytes:
    """Read `n` bytes, fewer only at the end: a short read mid-file would put padding mid-text."""
    data = stream.read(n)
    if len(data) in (0, n):
        return data
    parts = [data]
    got = len(data)
    while got < n and (more := stream.read(n - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


# http.client streams an iterable body in its own pieces with the Content-Length
# given (geventhttpclient sends a body of known length 8 KiB at a time, which
# costs seconds on a large model). Over gevent sockets, as tritonclient's, so
# the gevent.Timeout of TritonClient._call bounds the whole call.
def _connect(host: str, port: int, timeout: float) -> gevent.socket.socket:
    """A TCP connection to host:port, made only to addresses in MODELHUB_TRITON_ALLOWED_NETWORKS
    (every address the name resolves to is checked, then one is connected to: no second lookup)."""
    networks = settings.TRITON_ALLOWED_NETWORKS
    if not networks:
        return gevent.socket.create_connection((host, port), timeout)
    error: OSError | None = None
    for family, kind, proto, _, address in resolve_allowed(host, port, networks, gevent.socket.getaddrinfo):
        sock = gevent.socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"{host} resolves to no address")


def _guard_connections(client: triton_http.InferenceServerClient, host: str) -> None:
    # tritonclient's pool (geventhttpclient) resolves the host for each new connection and
    # connects to what it got: wrapping that resolver checks those very addresses before
    # any connect. (geventhttpclient is pinned with tritonclient; tests cover the hook.)
    pool = client._client_stub._connection_pool
    resolve = pool._resolve
    pool._resolve = lambda: check_resolved(host, resolve(), settings.TRITON_ALLOWED_NETWORKS)


class _GeventHTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = _connect(self.host, self.port, self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _GeventHTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        sock = _connect(self.host, self.port, self.timeout)
        self.sock = gevent.ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)


@dataclass(frozen=True)
class _Answer:
    """An http.client answer in the shape tritonclient's error reader expects."""

    status_code: int
    body: bytes

    def read(self) -> bytes:
        return self.body


class TritonClient:
    def __init__(
        self,
        server_name: str,
        base_url: str,
        metrics_url: str = "",
        *,
        timeout: float | None = None,
        load_timeout: float | None = None,
        max_load_bytes: int | None = None,
    ):
        self.server_name = server_name
        self.base_url = base_url
        self.metrics_url = metrics_url
        self.timeout = timeout if timeout is not None else settings.TRITON_TIMEOUT_S
        self.load_timeout = load_timeout if load_timeout is not None else settings.TRITON_LOAD_TIMEOUT_S
        self.max_load_bytes = max_load_bytes if max_load_bytes is not None else settings.MAX_LOAD_BYTES
        self._hostport, self._ssl = _hostport(base_url)
        self._clients: dict[float, triton_http.InferenceServerClient] = {}

    @classmethod
    def for_server(cls, server, **kwargs) -> "TritonClient":
        return cls(server.name, server.base_url, server.metrics_url, **kwargs)

    def _client(self, timeout: float) -> triton_http.InferenceServerClient:
        # tritonclient fixes timeouts per client object: keep one per timeout.
        if timeout not in self._clients:
            client = triton_http.InferenceServerClient(
                self._hostport, connection_timeout=timeout, network_timeout=timeout, ssl=self._ssl
            )
            _guard_connections(client, self._hostport.rsplit(":", 1)[0])
            self._clients[timeout] = client
        return self._clients[timeout]

    def _call(self, call: str, fn, *args, timeout: float | None = None, **kwargs):
        timeout = timeout or self.timeout
        try:
            # gevent.Timeout bounds the whole call, not just each socket read.
            with gevent.Timeout(timeout + 1, TimeoutError(f"no answer within {timeout:g} s")):
                return fn(self._client(timeout), *args, **kwargs)
        except InferenceServerException as exc:
            raise TritonError(self.server_name, call, exc.message() or str(exc), exc.status()) from exc
        except (OSError, TimeoutError, gevent.Timeout, http.client.HTTPException) as exc:
            self._clients.pop(timeout, None)  # its connection pool may hold a dead socket
            detail = str(exc) or type(exc).__name__
            timed_out = isinstance(exc, (TimeoutError, gevent.Timeout)) or "timed out" in detail
            if timed_out:
                detail = f"no answer within {timeout:g} s ({detail})"
            error = TritonUnavailable(self.server_name, call, f"{hide_credentials(self.base_url)}: {detail}")
            error.timed_out = timed_out
            raise error from exc

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # --- health and metadata -------------------------------------------------

    def health(self) -> Health:
        live = self._call("health (live)", lambda c: c.is_server_live())
        ready = self._call("health (ready)", lambda c: c.is_server_ready())
        return Health(live=bool(live), ready=bool(ready))

    def server_metadata(self) -> dict:
        return self._call("server metadata", lambda c: c.get_server_metadata())

    def model_ready(self, model: str, version: int | None = None) -> bool:
        return self._call(f"model ready ({model})", lambda c: c.is_model_ready(model, str(version) if version else ""))

    def model_metadata(self, model: str, version: int | None = None) -> dict:
        return self._call(
            f"model metadata ({model})", lambda c: c.get_model_metadata(model, str(version) if version else "")
        )

    def model_config(self, model: str) -> dict:
        return self._call(f"model config ({model})", lambda c: c.get_model_config(model))

    def served_versions(self, model: str) -> set[int]:
        """Versions of `model` Triton serves now (empty if the model is not loaded)."""
        try:
            metadata = self.model_metadata(model)
        except TritonUnavailable:
            raise
        except TritonError:
            return set()  # Triton answers 400 "unknown model" / "not ready"
        versions = {int(v) for v in metadata.get("versions", [])}
        return {v for v in versions if self.model_ready(model, v)}

    def repository_index(self) -> list[dict]:
        return self._call("repository index", lambda c: c.get_model_repository_index())

    # --- repository API ------------------------------------------------------

    def load(self, model: str, config: Mapping, files: Mapping[str, bytes] | Sequence[FileGroup] = ()) -> None:
        """Load (or reload) `model` from a config and file overrides; without
        files, Triton reads the model's folder in its own model repository.

        `files` maps paths inside the model folder ("1/model.py", "labels.txt")
        to bytes, or is a list of FileGroups that stream them; they travel in
        the request, so Triton needs no shared disk. The request is streamed:
        memory does not grow with the model. A load whose files exceed
        `max_load_bytes` (MODELHUB_MAX_LOAD_BYTES) fails before anything is sent.
        """
        call = f"load ({model})"
        groups = [FileGroup.in_memory(files)] if isinstance(files, Mapping) else list(files)
        body = LoadRequestBody(config, groups)
        if body.files_size > self.max_load_bytes:
            raise TritonError(
                self.server_name,
                call,
                f"the model's files are {body.files_size} bytes, over the {self.max_load_bytes} bytes one load may "
                "carry (MODELHUB_MAX_LOAD_BYTES); raise it, or give the server a model repository "
                "(model_repository: a folder Triton reads itself)",
            )
        try:
            self._call(call, lambda _: self._post_load(model, body, self.load_timeout), timeout=self.load_timeout)
        except LoadFileError as exc:
            raise TritonError(self.server_name, call, f"nothing was loaded: {exc}") from exc
        finally:
            body.close()

    def _post_load(self, model: str, body: LoadRequestBody, timeout: float) -> None:
        # A connection of its own: a half-sent body cannot be retried on another.
        host, port = self._hostport.rsplit(":", 1)
        connection_class = _GeventHTTPSConnection if self._ssl else _GeventHTTPConnection
        connection = connection_class(host, int(port), timeout=timeout)
        try:
            connection.request(
                "POST",
                f"/v2/repository/models/{quote(model)}/load",
                body=iter(body),
                headers={"Content-Length": str(len(body))},
            )
            response = connection.getresponse()
            # tritonclient's own reading of the answer: the same TritonError detail as its other calls.
            _raise_if_error(_Answer(response.status, response.read()))
        finally:
            connection.close()

    def unload(self, model: str) -> None:
        self._call(f"unload ({model})", lambda c: c.unload_model(model), timeout=self.load_timeout)

    def statistics(self, model: str = "") -> dict:
        return self._call(f"statistics ({model or 'all models'})", lambda c: c.get_inference_statistics(model))

    # --- inference -----------------------------------------------------------

    def infer(self, model: str, version: int | None, inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str]):
        """Run one inference; returns {output name: numpy array}. Inputs are
        sent as binary tensor data (Triton's binary extension)."""
        result = self._infer(model, version, inputs, datatypes)
        return {out["name"]: result.as_numpy(out["name"]) for out in result.get_response().get("outputs", [])}

    def infer_outputs(
        self,
        model: str,
        version: int | None,
        inputs: Mapping[str, np.ndarray],
        datatypes: Mapping[str, str],
        *,
        timeout: float | None = None,
    ) -> list[dict]:
        """Run one inference; returns Triton's description of each output it
        answered with ({name, datatype, shape}), the data left undecoded."""
        response = self._infer(model, version, inputs, datatypes, timeout=timeout).get_response()
        return [{key: out.get(key) for key in ("name", "datatype", "shape")} for out in response.get("outputs", [])]

    def infer_many(
        self,
        model: str,
        version: int | None,
        requests: Iterable[Mapping[str, np.ndarray]],
        datatypes: Mapping[str, str],
        output: str,
        *,
        timeout: float | None = None,
    ) -> Iterator[np.ndarray]:
        """Run one inference per item of `requests` and yield one output of each, in order,
        over one connection. Only that output is asked for, in binary: the accuracy check
        sends thousands of these. (Sequential on purpose: tritonclient's async_infer costs
        about 10 ms a request in greenlet hand-offs, far more than it overlaps.)"""
        call = f"infer ({model})"
        requested = [triton_http.InferRequestedOutput(output, binary_data=True)]
        number = str(version) if version else ""
        for inputs in requests:
            tensors = []
            for name, array in inputs.items():
                tensor = triton_http.InferInput(name, list(array.shape), datatypes[name])
                tensor.set_data_from_numpy(array, binary_data=True)
                tensors.append(tensor)
            result = self._call(
                call, lambda c, t=tensors: c.infer(model, t, model_version=number, outputs=requested), timeout=timeout
            )
            array = result.as_numpy(output)
            if array is None:
                raise TritonError(self.server_name, call, f"the answer has no output {output!r}")
            yield array

    def _infer(
        self,
        model: str,
        version: int | None,
        inputs: Mapping[str, np.ndarray],
        datatypes: Mapping[str, str],
        *,
        timeout: float | None = None,
    ):
        tensors = []
        for name, array in inputs.items():
            tensor = triton_http.InferInput(name, list(array.shape), datatypes[name])
            tensor.set_data_from_numpy(array, binary_data=True)
            tensors.append(tensor)
        return self._call(
            f"infer ({model})",
            lambda c: c.infer(model, tensors, model_version=str(version) if version else ""),
            timeout=timeout,
        )

    # --- metrics -------------------------------------------------------------

    def scrape_metrics(self, timeout: float | None = None) -> list:
        """Triton's Prometheus metrics, parsed into prometheus_client metric families.

        One GET with a timeout on the whole scrape; a redirect is refused, not
        followed (a metrics URL that points elsewhere is a misconfiguration, and
        following it could reach any host).
        """
        call = "metrics scrape"
        if not self.metrics_url:
            raise TritonError(self.server_name, call, "the server has no metrics URL configured")
        timeout = timeout or self.timeout
        shown = hide_credentials(self.metrics_url)  # what errors may name
        parts = urlsplit(self.metrics_url)
        hostport, ssl = _hostport(self.metrics_url)
        host, port = hostport.rsplit(":", 1)
        connection = (_GeventHTTPSConnection if ssl else _GeventHTTPConnection)(host, int(port), timeout=timeout)
        try:
            with gevent.Timeout(timeout, TimeoutError(f"no answer within {timeout:g} s")):
                connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else "") or "/")
                response = connection.getresponse()
                body = response.read()
        except (OSError, TimeoutError, gevent.Timeout, http.client.HTTPException) as exc:
            raise TritonUnavailable(self.server_name, call, f"{shown}: {exc or type(exc).__name__}") from exc
        finally:
            connection.close()
        if 300 <= response.status < 400:
            location = response.getheader("Location", "")
            raise TritonError(
                self.server_name,
                call,
                f"{shown} answered HTTP {response.status} redirecting to {location!r}: redirects are "
                "not followed; set the server's metrics URL to the metrics endpoint itself",
                str(response.status),
            )
        if response.status != 200:
            raise TritonError(
                self.server_name,
                call,
                f"HTTP {response.status} from {shown}",
                str(response.status),
            )
        try:
            return list(text_string_to_metric_families(body.decode("utf-8", "replace")))
        except ValueError as exc:
            raise TritonError(self.server_name, call, f"unparseable metrics from {shown}: {exc}") from exc
