"""The gateway: a plain ASGI app speaking Triton's HTTP protocol at /v2/...

    /v2/health/live, /v2/health/ready          the gateway's own health
    /v2                                        server metadata (any live server's)
    /v2/models/{name}[/versions/{n}][/ready|/config|/infer]
    /v2/modelhub/stats                         counters (sampling, routing, errors)

A model name without a version goes to the version behind the alias
(MODELHUB_GATEWAY_ALIAS, "production"); /versions/{n} pins one. Requests and answers
pass through as bytes: Triton's status, body and headers (the binary extension's
Inference-Header-Content-Length included) come back unchanged; only an unreachable
server (502) or a timeout (504) gets an answer of the gateway's own.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass

from django.conf import settings
from django.db import connections

from .refresher import Refresher
from .routing import Upstream
from .sampling import DEFAULT_SINK, SampleBuffer
from .tokens import Refused, check
from .upstream import Pool, Response, UpstreamError

# Request headers Triton needs to read the body; the rest (Authorization above all) stay here.
FORWARDED = frozenset({b"content-type", b"inference-header-content-length", b"content-encoding", b"accept-encoding"})
MODEL_ACTIONS = frozenset({"", "ready", "config", "infer"})
JSON = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class GatewayConfig:
    auth_open: bool
    timeout_s: float
    refresh_s: float
    alias: str
    sample_rate: float
    sample_buffer: int
    sample_batch: int
    sample_sink: object = DEFAULT_SINK  # dotted path or a callable

    @classmethod
    def from_settings(cls, **overrides) -> GatewayConfig:
        values = {
            "auth_open": settings.GATEWAY_AUTH == "open",
            "timeout_s": settings.GATEWAY_TIMEOUT_S,
            "refresh_s": settings.GATEWAY_REFRESH_S,
            "alias": settings.GATEWAY_ALIAS,
            "sample_rate": settings.GATEWAY_SAMPLE_RATE,
            "sample_buffer": settings.GATEWAY_SAMPLE_BUFFER,
            "sample_batch": settings.GATEWAY_SAMPLE_BATCH,
        }
        return cls(**(values | overrides))


class _Answer(Exception):
    """An answer of the gateway's own: {"error": message} with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Destination:
    server: Upstream
    path: str
    model: str | None  # registered model and version: sampled; None: passed through as asked
    version: int | None


class Gateway:
    def __init__(self, config: GatewayConfig):
        self.config = config
        self.refresher = Refresher(config.alias, config.refresh_s, read_token_cache=not config.auth_open)
        self.sampling = SampleBuffer(config.sample_buffer, config.sample_batch, config.sample_sink)
        self.pool: Pool | None = None
        self.counts = {"forwarded": 0, "refused": 0, "unreachable": 0, "timeouts": 0}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        # The first table before the first request, so routing never starts empty.
        await asyncio.get_running_loop().run_in_executor(None, self._first_refresh)
        self.refresher.start()
        self.sampling.start()
        self.pool = Pool()

    def _first_refresh(self) -> None:
        try:
            self.refresher.refresh()
        finally:
            connections.close_all()  # the executor thread's own connection

    async def stop(self) -> None:
        self.refresher.stop()
        self.sampling.stop()
        if self.pool is not None:
            self.pool.close()

    async def _http(self, scope, receive, send) -> None:
        path: str = scope["path"]
        try:
            if path.startswith("/v2/models/"):
                await self._forward(scope, receive, send, self._model_destination(scope, path))
            elif path in ("/v2", "/v2/"):
                await self._forward(scope, receive, send, self._any_server_destination(scope, None, path))
            elif path == "/v2/health/live":
                await _reply(send, 200, b"", [])
            elif path == "/v2/health/ready":
                ready = self.refresher.loaded and bool(self.refresher.table.servers)
                await _reply(send, 200 if ready else 503, b"", [])
            elif path == "/v2/modelhub/stats":
                self._authorize(scope, None)
                await _reply(send, 200, json.dumps(self.stats()).encode(), JSON)
            else:
                raise _Answer(404, f"no such gateway endpoint: {scope['method']} {path}")
        except _Answer as answer:
            await _reply(send, answer.status, json.dumps({"error": str(answer)}).encode(), JSON)

    def stats(self) -> dict:
        table = self.refresher.table
        return {
            "requests": dict(self.counts),
            "routing": {
                "rebuilds": self.refresher.rebuilds,
                "live_servers": [s.name for s in table.servers],
                "aliased_models": len(table.aliased),
                "loaded_versions": len(table.pinned),
            },
            "sampling": self.sampling.stats() | {"rate": self.config.sample_rate},
        }

    def _authorize(self, scope, model: str | None) -> None:
        if self.config.auth_open:
            return
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        try:
            check(self.refresher.tokens, authorization, model)
        except Refused as refused:
            self.counts["refused"] += 1
            raise _Answer(refused.status, str(refused)) from None

    def _model_destination(self, scope, path: str) -> _Destination:
        model, version, action = _parse_model_path(path)
        self._authorize(scope, model)
        table = self.refresher.table
        if model not in table.models:
            # Not ModelHub's: Triton's own answer (400/404 "unknown model") comes back.
            return self._any_server_destination(scope, model, path)
        route = table.route(model, version)
        if route is None and version is None:
            raise _Answer(
                404,
                f"model {model!r} has no {self.config.alias!r} alias: move the alias to a version, "
                f"or pin one with /v2/models/{model}/versions/<n>",
            )
        target = route.choose() if route is not None else None
        if target is None or not target.servers:
            which = f"version {version}" if version is not None else f"{route.label} (version {target.version})"
            raise _Answer(503, f"model {model!r} {which} is not loaded on any live server")
        server = target.next_server()
        upstream_path = f"{server.path_prefix}/v2/models/{target.triton_name}/versions/{target.version}"
        if action:
            upstream_path += "/" + action
        return _Destination(server, upstream_path, model, target.version)

    def _any_server_destination(self, scope, model: str | None, path: str) -> _Destination:
        if model is None:
            self._authorize(scope, None)
        server = self.refresher.table.any_server()
        if server is None:
            raise _Answer(503, "no live Triton server is registered")
        return _Destination(server, server.path_prefix + path, None, None)

    async def _forward(self, scope, receive, send, destination: _Destination) -> None:
        body = await _read_body(receive)
        head = _request_head(scope, destination, len(body))
        server = destination.server
        try:
            async with asyncio.timeout(self.config.timeout_s):
                response = await self.pool.request(server, head, body)
        except UpstreamError as exc:
            self.counts["unreachable"] += 1
            raise _Answer(502, str(exc)) from None
        except TimeoutError:
            self.counts["timeouts"] += 1
            limit = f"{self.config.timeout_s:g} s (MODELHUB_GATEWAY_TIMEOUT_S)"
            raise _Answer(504, f"server {server.name} did not answer within {limit}") from None
        self.counts["forwarded"] += 1
        await _reply(send, response.status, response.body, response.headers)
        if destination.model is not None and self.config.sample_rate and random.random() < self.config.sample_rate:
            self._sample(scope, destination, body, response)

    def _sample(self, scope, destination: _Destination, body: bytes, response: Response) -> None:
        header_length = next((v for k, v in scope["headers"] if k == b"inference-header-content-length"), None)
        length = int(header_length) if header_length is not None else None
        self.sampling.offer(destination.model, destination.version, body, length, response)


def _parse_model_path(path: str) -> tuple[str, int | None, str]:
    """/v2/models/{name}[/versions/{n}][/{action}] -> (name, n or None, action)."""
    parts = path[len("/v2/models/") :].split("/")
    model, rest, version = parts[0], parts[1:], None
    if rest[:1] == ["versions"]:
        if len(rest) < 2 or not rest[1].isdigit():
            raise _Answer(400, f"bad version in {path!r}: expected /v2/models/{model}/versions/<number>")
        version, rest = int(rest[1]), rest[2:]
    action = "/".join(rest)
    if not model or action not in MODEL_ACTIONS:
        raise _Answer(404, f"no such gateway endpoint: {path} (models/<name>[/versions/<n>][/ready|/config|/infer])")
    return model, version, action


async def _read_body(receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    while message.get("more_body"):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def _request_head(scope, destination: _Destination, length: int) -> bytes:
    server = destination.server
    target = destination.path
    if scope["query_string"]:
        target += "?" + scope["query_string"].decode("latin-1")
    start = f"{scope['method']} {target} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
    lines = [f"{start}Content-Length: {length}\r\n".encode()]
    lines.extend(name + b": " + value + b"\r\n" for name, value in scope["headers"] if name in FORWARDED)
    lines.append(b"\r\n")
    return b"".join(lines)


async def _reply(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    if not any(name == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(**overrides) -> Gateway:
    """The ASGI app, configured from settings (uvicorn --factory modelhub.gateway.app:create_app)."""
    return Gateway(GatewayConfig.from_settings(**overrides))
