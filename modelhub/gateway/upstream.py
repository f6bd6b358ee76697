"""A small HTTP/1.1 client to Triton with a keep-alive connection pool per server.

Hand-written on an asyncio Protocol with httptools' C parser: one request is one
transport write, and the answer is collected as the bytes arrive, with no parsing
of the bodies and none of a general client's per-request work. Idle connections
are kept per server and reused.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass

import httptools

from .routing import Upstream

# Connection management is the proxy's own business, never passed on.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade"})
MAX_IDLE_PER_SERVER = 64


class UpstreamError(Exception):
    """The server could not be reached or broke the exchange (502)."""


class _StaleConnection(Exception):
    """A reused connection closed before answering: safe to send again."""


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]  # Triton's, hop-by-hop ones removed
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, server: Upstream):
        self.server = server
        self.transport = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future | None = None
        self._received = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    async def exchange(self, head: bytes, body: bytes) -> tuple[Response, bool]:
        """Send the request, wait for the whole answer: (response, keep the connection)."""
        self._waiter = asyncio.get_running_loop().create_future()
        self._received = False
        if len(body) < 65536:
            self.transport.write(head + body)  # one packet for the usual small request
        else:
            self.transport.writelines((head, body))  # large tensors: no copy to join them
        try:
            return await self._waiter
        except BaseException:  # cancelled by the timeout, or broken: mid-exchange, not reusable
            self.close()
            raise

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"server {self.server.name} sent a malformed answer: {exc}"))
            self.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self._received:
            self._fail(UpstreamError(f"server {self.server.name} closed the connection in the middle of its answer"))
        else:
            self._fail(_StaleConnection())

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name not in HOP_BY_HOP:
            self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        response = Response(self._parser.get_status_code(), self._headers, body)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((response, self._parser.should_keep_alive()))

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)


class Pool:
    """Idle connections per server (keyed by the Upstream), for one event loop."""

    def __init__(self) -> None:
        self._idle: dict[Upstream, deque[_Connection]] = {}
        self._tls = ssl.create_default_context()

    async def request(self, server: Upstream, head: bytes, body: bytes) -> Response:
        """Send one whole request and read the whole answer.

        A pooled connection the server has closed meanwhile fails before any byte of an
        answer: then the request is sent once more on a fresh connection."""
        idle = self._idle.get(server)
        if idle is None:
            idle = self._idle[server] = deque()
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            try:
                return await self._exchange(connection, idle, head, body)
            except _StaleConnection:
                continue
        connection = await self._connect(server)
        try:
            return await self._exchange(connection, idle, head, body)
        except _StaleConnection as exc:
            raise UpstreamError(f"server {server.name} closed the connection without answering") from exc

    async def _connect(self, server: Upstream) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(server), server.host, server.port, ssl=self._tls if server.tls else None
            )
        except OSError as exc:
            raise UpstreamError(f"server {server.name} ({server.host}:{server.port}) is unreachable: {exc}") from exc
        return connection

    @staticmethod
    async def _exchange(connection: _Connection, idle: deque, head: bytes, body: bytes) -> Response:
        response, keep = await connection.exchange(head, body)
        if keep and len(idle) < MAX_IDLE_PER_SERVER:
            idle.append(connection)
        else:
            connection.close()
        return response

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
