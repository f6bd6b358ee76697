"""The gateway: Triton's HTTP protocol at /v2/..., served by server.py.

    /v2/health/live, /v2/health/ready          the gateway's own health
    /v2                                        server metadata (any live server's)
    /v2/models/{name}[/versions/{n}][/ready|/config|/infer]
    /v2/modelhub/stats                         counters (sampling, routing, errors, connections)

A model name without a version goes to the version behind the alias
(MODELHUB_GATEWAY_ALIAS, "production"); /versions/{n} pins one. Requests and answers
pass through as bytes: Triton's answer is relayed as it arrived (status line,
headers, the binary extension's Inference-Header-Content-Length, body); only
hop-by-hop headers are Triton's business with the gateway and get rewritten. An
unreachable server (502) or a timeout (504) gets an answer of the gateway's own.

The request path is synchronous Python on the event loop up to the write to Triton,
and again from Triton's answer to the write to the client: everything it needs
(routing, tokens, request heads for Triton) is in memory.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import re
import time
from dataclasses import dataclass
from urllib.parse import unquote

from django.conf import settings
from django.db import connections

from .metrics import GatewayMetrics
from .naming import client_facing, with_body
from .refresher import Refresher
from .routing import RoutingTable, Upstream
from .sampling import DEFAULT_SINK, SampleBuffer
from .server import FAILED, HttpConnection, Request, answer_bytes, own_answer
from .tokens import Refused, TokenChecker, record_last_used
from .upstream import Pool

MODEL_ACTIONS = frozenset({"", "ready", "config", "infer"})
MODELS_PREFIX = b"/v2/models/"
# A hop-by-hop header in Triton's head means the answer is rebuilt, not relayed as is.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade"})
_HOP_BY_HOP_LINE = re.compile(rb"\r\n(?:connection|keep-alive|transfer-encoding|te|trailer|upgrade)[ \t]*:", re.I)
_PARSED_PATHS_MAX = 4096

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayConfig:
    auth_open: bool
    timeout_s: float
    refresh_s: float
    alias: str
    sample_rate: float
    sample_buffer: int
    sample_batch: int
    max_body: int
    sample_sink: object = DEFAULT_SINK  # dotted path or a callable
    allowed_networks: tuple = ()  # MODELHUB_TRITON_ALLOWED_NETWORKS

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
            "max_body": settings.GATEWAY_MAX_BODY_BYTES,
            "allowed_networks": tuple(settings.TRITON_ALLOWED_NETWORKS),
        }
        return cls(**(values | overrides))


class _Answer(Exception):
    """An answer of the gateway's own: {"error": message} with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Gateway:
    def __init__(self, config: GatewayConfig):
        self.config = config
        self.refresher = Refresher(config.alias, config.refresh_s, read_token_cache=not config.auth_open)
        self.sampling = SampleBuffer(config.sample_buffer, config.sample_batch, config.sample_sink)
        self.tokens = TokenChecker()
        self.pool: Pool | None = None
        self.connections: set[HttpConnection] = set()  # the server's open client connections
        self.counts = {"forwarded": 0, "refused": 0, "unreachable": 0, "timeouts": 0}
        self.metrics = GatewayMetrics(self)
        # path -> (model, version, action): parsed once per distinct path.
        self._parsed: dict[bytes, tuple[str, int | None, str]] = {}
        # (method, server, Triton's path) -> the start of the request head for Triton; per table.
        self._heads: dict[tuple, bytes] = {}
        self._heads_table: RoutingTable | None = None

    async def start(self) -> None:
        # The first table before the first request, so routing never starts empty.
        await asyncio.get_running_loop().run_in_executor(None, self._first_refresh)
        self.refresher.start()
        self.sampling.start()
        self.pool = Pool(self.config.timeout_s, allowed_networks=self.config.allowed_networks)

    def _first_refresh(self) -> None:
        try:
            self.refresher.refresh()
        finally:
            connections.close_all()  # the executor thread's own connection

    async def stop(self) -> None:
        self.refresher.stop()
        if not self.config.auth_open:  # the tokens used since the refresher's last pass
            await asyncio.get_running_loop().run_in_executor(None, self._record_last_used)
        self.sampling.stop()
        if self.pool is not None:
            self.pool.close()

    def _record_last_used(self) -> None:
        try:
            record_last_used(self.refresher.tokens_seen, self.refresher.tokens)
        except Exception:
            log.exception("recording the tokens' last use at shutdown failed")  # shutting down goes on
        finally:
            connections.close_all()

    def handle(self, connection: HttpConnection, request: Request) -> None:
        """Answer `request` on `connection`, now (the gateway's own answers) or when Triton has."""
        url = request.url
        query_at = url.find(b"?")
        path = url if query_at < 0 else url[:query_at]
        try:
            if path.startswith(MODELS_PREFIX):
                server, target = self._model_destination(request, path)
                model = target.model if target is not None else None
            elif path == b"/v2" or path == b"/v2/":
                self._authorize(request, None)
                server, target, model = self._any_server(), None, None
            else:
                self._own_endpoint(connection, request, path)
                return
        except _Answer as answer:
            connection.respond(own_answer(answer.status, str(answer), request.keep_alive), request.keep_alive)
            return
        if target is not None:
            prefix = self._head_prefix(request.method, server, target, query_at, url)
        else:  # not one of ModelHub's models, or the server's metadata: Triton's path as asked
            prefix = _head_start(request.method, server, server.path_prefix.encode() + url)
        body = request.body
        head = prefix + b"".join(request.forwarded) + b"Content-Length: %d\r\n\r\n" % len(body)
        self.pool.send(server, head, body, _Exchange(self, connection, request, model, target))

    def _own_endpoint(self, connection: HttpConnection, request: Request, path: bytes) -> None:
        if path == b"/v2/health/live":
            status, body = 200, b""
        elif path == b"/v2/health/ready":
            status, body = (200 if self.refresher.loaded and self.refresher.table.servers else 503), b""
        elif path == b"/metrics":
            self._authorize_metrics(request)
            body = self.metrics.exposition()
            connection.respond(
                answer_bytes(200, body, b"text/plain; version=0.0.4; charset=utf-8", request.keep_alive),
                request.keep_alive,
            )
            return
        elif path == b"/v2/modelhub/stats":
            self._authorize(request, None)
            connection.respond(
                answer_bytes(200, json.dumps(self.stats()).encode(), b"application/json", request.keep_alive),
                request.keep_alive,
            )
            return
        else:
            method = request.method.decode("latin-1")
            raise _Answer(404, f"no such gateway endpoint: {method} {_text(path)}")
        connection.respond(answer_bytes(status, body, None, request.keep_alive), request.keep_alive)

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
            "connections": {
                "clients": len(self.connections),
                "upstream_idle": self.pool.idle_count() if self.pool is not None else 0,
                "upstream_opened": self.pool.opened if self.pool is not None else 0,
            },
            "sampling": self.sampling.stats() | {"rate": self.config.sample_rate},
        }

    def _authorize(self, request: Request, model: str | None) -> None:
        if self.config.auth_open:
            return
        try:
            prefix = self.tokens.check(self.refresher.tokens, request.authorization, model)
        except Refused as refused:
            self.counts["refused"] += 1
            raise _Answer(refused.status, str(refused)) from None
        self.refresher.tokens_seen.add(prefix)  # last_used_at, written by the refresher thread

    @staticmethod
    def _authorize_metrics(request: Request) -> None:
        """Open, as the web's /metrics, unless MODELHUB_METRICS_TOKEN asks for that Bearer token."""
        token = settings.METRICS_TOKEN
        if token and not hmac.compare_digest(request.authorization or b"", b"Bearer " + token.encode()):
            raise _Answer(401, "a Bearer token is required (MODELHUB_METRICS_TOKEN)")

    def _model_destination(self, request: Request, path: bytes) -> tuple[Upstream, _Target | None]:
        parsed = self._parsed.get(path)
        if parsed is None:
            parsed = _parse_model_path(path)
            if len(self._parsed) >= _PARSED_PATHS_MAX:
                self._parsed.clear()  # bounded: paths are the client's to choose
            self._parsed[path] = parsed
        model, version, action = parsed
        self._authorize(request, model)
        table = self.refresher.table
        if model not in table.models:
            # Not ModelHub's: Triton's own answer (400/404 "unknown model") comes back.
            return self._any_server(), None
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
        return target.next_server(), _Target(model, target.version, target.triton_name, action)

    def _any_server(self) -> Upstream:
        server = self.refresher.table.any_server()
        if server is None:
            raise _Answer(503, "no live Triton server is registered")
        return server

    def _head_prefix(self, method: bytes, server: Upstream, target: _Target, query_at: int, url: bytes) -> bytes:
        """The request line and Host for Triton, built once per table for each destination."""
        table = self.refresher.table
        if table is not self._heads_table:
            self._heads = {}  # servers or names may have changed
            self._heads_table = table
        query = url[query_at:] if query_at >= 0 else b""
        key = (method, server.name, target.triton_name, target.version, target.action, query)
        prefix = self._heads.get(key)
        if prefix is None:
            path = f"{server.path_prefix}/v2/models/{target.triton_name}/versions/{target.version}"
            if target.action:
                path += "/" + target.action
            prefix = _head_start(method, server, path.encode() + query)
            if len(self._heads) >= _PARSED_PATHS_MAX:
                self._heads.clear()
            self._heads[key] = prefix
        return prefix


class _Target:
    """Where a request for one of ModelHub's models goes on the chosen server."""

    __slots__ = ("model", "version", "triton_name", "action", "renamed")

    def __init__(self, model: str, version: int, triton_name: str, action: str):
        self.model = model
        self.version = version
        self.triton_name = triton_name
        self.action = action
        # Metadata and config name the model: Triton's per-version name goes back to the client's.
        self.renamed = triton_name != model and action in ("", "config")


class _Exchange:
    """One forwarded request: relays Triton's answer (or the failure) to the client."""

    __slots__ = ("gateway", "connection", "request", "model", "target", "started")

    def __init__(self, gateway: Gateway, connection: HttpConnection, request: Request, model, target):
        self.started = time.perf_counter()
        self.gateway = gateway
        self.connection = connection
        self.request = request
        self.model = model  # None: not one of ModelHub's models, never sampled
        self.target = target

    def answered(self, status: int, raw: list[bytes], body_parts: list[bytes]) -> None:
        try:
            self._relay(status, raw, body_parts)
        except Exception:  # a bug: answered and logged, the client not left waiting
            log.exception("the gateway failed relaying Triton's answer to %r", self.request.url)
            self.connection.respond(own_answer(500, FAILED, keep_alive=False), keep_alive=False)

    def _relay(self, status: int, raw: list[bytes], body_parts: list[bytes]) -> None:
        gateway, request, target = self.gateway, self.request, self.target
        gateway.counts["forwarded"] += 1
        if target is not None and target.renamed and status == 200:
            raw, body_parts = _renamed(raw, body_parts, target)
        self.connection.respond(_relay(raw, body_parts, request.keep_alive), request.keep_alive)
        gateway.metrics.observe["ok" if status < 400 else "triton_error"](time.perf_counter() - self.started)
        rate = gateway.config.sample_rate
        if rate and self.model is not None and random.random() < rate:
            head = _head_of(raw)
            gateway.sampling.offer(self.model, target.version, request.body, request.header_length, head, body_parts)

    def failed(self, status: int, message: str) -> None:
        self.gateway.counts["timeouts" if status == 504 else "unreachable"] += 1
        self.gateway.metrics.observe["timeout" if status == 504 else "unreachable"](time.perf_counter() - self.started)
        keep_alive = self.request.keep_alive
        self.connection.respond(own_answer(status, message, keep_alive), keep_alive)


def _relay(raw: list[bytes], body_parts: list[bytes], keep_alive: bool) -> bytes | list[bytes]:
    """Triton's answer for the client: as it arrived, unless its head has hop-by-hop headers
    (Triton's connection management, a chunked body) or the client's connection closes after it."""
    first = raw[0]
    end = first.find(b"\r\n\r\n")
    if end < 0:  # a head split over reads
        first = b"".join(raw)
        raw = [first]
        end = first.find(b"\r\n\r\n")
    if _HOP_BY_HOP_LINE.search(first, 0, end + 2) is None:
        if keep_alive:
            return raw[0] if len(raw) == 1 else raw
        return [first[:end], b"\r\nConnection: close\r\n\r\n", first[end + 4 :], *raw[1:]]
    lines = first[:end].split(b"\r\n")
    kept = [
        line
        for line in lines[1:]
        if line.split(b":", 1)[0].strip().lower() not in HOP_BY_HOP and not line.lower().startswith(b"content-length")
    ]
    body = b"".join(body_parts)
    kept.append(b"Content-Length: %d" % len(body))
    if not keep_alive:
        kept.append(b"Connection: close")
    return b"\r\n".join([lines[0], *kept]) + b"\r\n\r\n" + body


def _renamed(raw: list[bytes], body_parts: list[bytes], target: _Target) -> tuple[list[bytes], list[bytes]]:
    body = b"".join(body_parts)
    named = client_facing(body, target.triton_name, target.model)
    if named is body:
        return raw, body_parts
    return [with_body(_head_of(raw), named)], [named]


def _head_of(raw: list[bytes]) -> bytes:
    first = raw[0]
    end = first.find(b"\r\n\r\n")
    if end < 0:
        first = b"".join(raw)
        end = first.find(b"\r\n\r\n")
    return first[:end]


def _head_start(method: bytes, server: Upstream, target: bytes) -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: %s:%d\r\n" % (method, target, server.host.encode(), server.port)


def _text(path: bytes) -> str:
    text = path.decode("latin-1")
    return unquote(text) if "%" in text else text


def _parse_model_path(raw_path: bytes) -> tuple[str, int | None, str]:
    """/v2/models/{name}[/versions/{n}][/{action}] -> (name, n or None, action)."""
    path = _text(raw_path)
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


def create_app(**overrides) -> Gateway:
    """The gateway, configured from settings (overrides: GatewayConfig's fields)."""
    return Gateway(GatewayConfig.from_settings(**overrides))
