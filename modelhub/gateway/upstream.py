"""A small HTTP/1.1 client to Triton with a keep-alive connection pool per server.

Hand-written on an asyncio Protocol with httptools' C parser and driven by
callbacks, not coroutines: a request on a pooled connection is one transport write
and no timer (one sweep every TIMEOUT_TICK_S finds exchanges past their deadline),
and the answer is handed over as the bytes arrived (Triton's head and body,
unparsed) when the parser says it is complete. Only a new connection (the first
request to a server, or after Triton closed one) takes a task.

Whoever asks implements `Exchange`: `answered(status, raw, body_parts)` with the
answer, or `failed(status, message)` with 502 (unreachable, broken) or 504 (no
whole answer within the timeout).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from typing import Protocol

import httptools

from modelhub.lib.networks import check_resolved

from .routing import Upstream

MAX_IDLE_PER_SERVER = 64
# How often exchanges past their deadline are looked for: a 504 comes up to this late.
# A timer per request would cost more than the rest of the gateway's Python per request.
TIMEOUT_TICK_S = 0.05


class Exchange(Protocol):
    def answered(self, status: int, raw: list[bytes], body_parts: list[bytes]) -> None:
        """Triton's whole answer: `raw` as received (head, then body as sent), `body_parts` decoded."""

    def failed(self, status: int, message: str) -> None:
        """No answer: 502 or 504, and what went wrong, naming the server."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    __slots__ = (
        "pool",
        "server",
        "transport",
        "closed",
        "reused",
        "_parser",
        "_exchange",
        "_head",
        "_body",
        "_raw",
        "_complete",
        "_keep_alive",
    )

    def __init__(self, pool: Pool, server: Upstream):
        self.pool = pool
        self.server = server
        self.transport = None
        self.closed = False
        self.reused = False  # served an exchange before: a close before answering may be a stale keep-alive
        self._parser = httptools.HttpResponseParser(self)
        self._exchange: _Pending | None = None
        self._raw: list[bytes] = []
        self._body: list[bytes] = []
        self._complete = False
        self._keep_alive = False

    def send(self, pending: _Pending) -> None:
        self._exchange = pending
        self._raw = []
        self._body = []
        self._complete = False
        if pending.deadline <= self.pool.loop.time():  # spent connecting
            self.timed_out()
            return
        head, body = pending.head, pending.body
        if len(body) < 65536:
            self.transport.write(head + body)  # one packet for the usual small request
        else:
            self.transport.writelines((head, body))  # large tensors: no copy to join them

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.pool.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Nagle would hold a second segment of a request for the server's delayed ACK (40 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._exchange is None:
            self.close()  # bytes nobody asked for: this connection cannot be trusted again
            return
        self._raw.append(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._finish_failed(502, f"server {self.server.name} sent a malformed answer: {exc}")
            return
        if self._complete:
            # Handled here, after the parser returned, so the exchange may reuse this connection at once.
            pending, raw, body = self._exchange, self._raw, self._body
            self._exchange = None
            if self._keep_alive:
                self.reused = True
                self.pool.release(self)
            else:
                self.close()
            pending.exchange.answered(self._parser.get_status_code(), raw, body)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pool.connections.discard(self)
        pending = self._exchange
        if pending is None:
            return
        if not self._raw and self.reused:
            # A kept-alive connection the server closed meanwhile: nothing was answered, send once more.
            self._exchange = None
            self.pool.start_fresh(self.server, pending)
        elif self._raw:
            self._finish_failed(502, f"server {self.server.name} closed the connection in the middle of its answer")
        else:
            self._finish_failed(502, f"server {self.server.name} closed the connection without answering")

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()  # only right until the parser moves on

    def past_deadline(self, now: float) -> bool:
        return self._exchange is not None and self._exchange.deadline <= now

    def timed_out(self) -> None:
        self._finish_failed(504, self.pool.timeout_message(self.server))

    def _finish_failed(self, status: int, message: str) -> None:
        pending = self._exchange
        self._exchange = None
        self.close()  # mid-exchange: never reusable
        if pending is not None:
            pending.exchange.failed(status, message)


class _Pending:
    """One request on its way: what to send, to whom to answer, and by when."""

    __slots__ = ("head", "body", "exchange", "deadline")

    def __init__(self, head: bytes, body: bytes, exchange: Exchange, deadline: float):
        self.head = head
        self.body = body
        self.exchange = exchange
        self.deadline = deadline


class Pool:
    """Idle connections per server (keyed by the Upstream), for one event loop."""

    def __init__(
        self, timeout_s: float, timeout_setting: str = "MODELHUB_GATEWAY_TIMEOUT_S", allowed_networks: tuple = ()
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.allowed_networks = tuple(allowed_networks)  # MODELHUB_TRITON_ALLOWED_NETWORKS; empty: any
        self.timeout_s = timeout_s
        self._timeout_setting = timeout_setting
        self._idle: dict[Upstream, deque[_Connection]] = {}
        self._connecting: set[asyncio.Task] = set()
        self.connections: set[_Connection] = set()  # every open one, idle or busy, for the sweep
        self._sweeper = self.loop.create_task(self._sweep(min(TIMEOUT_TICK_S, max(timeout_s / 4, 0.005))))
        self._tls = ssl.create_default_context()
        self.opened = 0  # connections made, for the stats

    def send(self, server: Upstream, head: bytes, body: bytes, exchange: Exchange) -> None:
        """Send one whole request; `exchange` hears of the answer (or the failure) later."""
        pending = _Pending(head, body, exchange, self.loop.time() + self.timeout_s)
        idle = self._idle.get(server)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                connection.send(pending)
                return
        self.start_fresh(server, pending)

    def start_fresh(self, server: Upstream, pending: _Pending) -> None:
        task = self.loop.create_task(self._connect_and_send(server, pending))
        self._connecting.add(task)  # a reference, or the task may be collected mid-connect
        task.add_done_callback(self._connecting.discard)

    def release(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.server)
        if idle is None:
            idle = self._idle[connection.server] = deque()
        if len(idle) < MAX_IDLE_PER_SERVER:
            idle.append(connection)
        else:
            connection.close()

    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def timeout_message(self, server: Upstream) -> str:
        return f"server {server.name} did not answer within {self.timeout_s:g} s ({self._timeout_setting})"

    async def _sweep(self, tick: float) -> None:
        while True:
            await asyncio.sleep(tick)
            now = self.loop.time()
            for connection in [c for c in self.connections if c.past_deadline(now)]:
                connection.timed_out()

    async def _connect_and_send(self, server: Upstream, pending: _Pending) -> None:
        try:
            async with asyncio.timeout_at(pending.deadline):
                host, hostname = server.host, None
                if self.allowed_networks:
                    # Checked at connect time, every address the name resolves to (as the Triton
                    # client does): a DNS answer that moved since the server was saved counts.
                    infos = await self.loop.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
                    host = check_resolved(server.host, infos, self.allowed_networks)[0][4][0]
                    hostname = server.host if server.tls else None
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self, server),
                    host,
                    server.port,
                    ssl=self._tls if server.tls else None,
                    server_hostname=hostname,
                )
        except TimeoutError:
            pending.exchange.failed(504, self.timeout_message(server))
            return
        except OSError as exc:
            message = f"server {server.name} ({server.host}:{server.port}) is unreachable: {exc}"
            pending.exchange.failed(502, message)
            return
        self.opened += 1
        connection.send(pending)

    def close(self) -> None:
        self._sweeper.cancel()
        for task in list(self._connecting):
            task.cancel()
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
