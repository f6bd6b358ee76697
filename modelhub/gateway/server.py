"""The gateway's HTTP/1.1 server: an asyncio Protocol on httptools' C request parser.

ModelHub's own instead of an ASGI server, because on a small machine the gateway's
CPU per request competes with Triton's: no scope dicts, no receive/send coroutines,
no task per request. A connection parses requests as bytes arrive and hands each
whole one to the handler (`Gateway.handle(connection, request)`), which answers
with `connection.respond(data, keep_alive)` now or later. Requests pipelined on one
connection are answered one at a time, in order.

The HTTP rules kept here: keep-alive (HTTP/1.1 by default, HTTP/1.0 only when
asked), Content-Length and chunked request bodies, `Expect: 100-continue`, a body
over the limit is a 413 and a malformed request a 400 (both then close), and a
connection idle for IDLE_TIMEOUT_S is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections import deque
from http import HTTPStatus

import httptools

# Request headers Triton needs to read the body; the rest (Authorization above all) stay here.
FORWARDED = frozenset({b"content-type", b"inference-header-content-length", b"content-encoding", b"accept-encoding"})
MAX_PIPELINED = 32  # whole requests waiting on one connection before it stops reading
IDLE_TIMEOUT_S = 15.0  # a connection without a byte or an answer for this long (to twice it) is closed
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
FAILED = "the gateway failed on this request (its log says why)"

log = logging.getLogger(__name__)


class Request:
    """One parsed request, as the gateway needs it."""

    __slots__ = ("method", "url", "authorization", "forwarded", "header_length", "body", "keep_alive")

    def __init__(self, method: bytes, url: bytes, authorization, forwarded, header_length, body, keep_alive):
        self.method = method
        self.url = url  # raw target: path and query, as sent
        self.authorization: bytes | None = authorization
        self.forwarded: list[bytes] = forwarded  # b"Name: value\r\n" lines for Triton
        self.header_length: bytes | None = header_length  # Inference-Header-Content-Length
        self.body: bytes = body
        self.keep_alive: bool = keep_alive


def own_answer(status: int, message: str, keep_alive: bool = True) -> bytes:
    """An answer of the gateway's own: {"error": message}."""
    return answer_bytes(status, json.dumps({"error": message}).encode(), b"application/json", keep_alive)


def answer_bytes(status: int, body: bytes, content_type: bytes | None, keep_alive: bool = True) -> bytes:
    head = b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())
    if content_type is not None:
        head += b"Content-Type: " + content_type + b"\r\n"
    if not keep_alive:
        head += b"Connection: close\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


class _Refusal(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class HttpConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handler, registry: set, max_body: int):
        self.handler = handler
        self.registry = registry  # the server's open connections
        self.max_body = max_body
        self.transport = None
        self.closed = False
        self.busy = False  # a request is being answered
        self.activity = 0  # bumped by every read and answer; the idle sweep compares it
        self.swept_at = -1
        self._parser = httptools.HttpRequestParser(self)
        self._pending: deque[Request] = deque()
        self._dispatching = False
        self._write_paused = False
        self._read_paused = False
        self._continue_owed = False
        self._refusal: bytes | None = None  # the 400/413 owed once the requests before it are answered
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._authorization = None
        self._forwarded: list[bytes] = []
        self._header_length = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._expect_continue = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # an answer is one write: send it now
        self.registry.add(self)

    def connection_lost(self, exc) -> None:
        # A request still with Triton finishes there; its answer finds `closed` and is dropped.
        self.closed = True
        self._pending.clear()
        self.registry.discard(self)

    def data_received(self, data: bytes) -> None:
        self.activity += 1
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _Refusal):
                self._refuse(refusal.status, str(refusal))
            else:
                raise
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported: the gateway speaks HTTP/1.1")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._next()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"authorization":
            self._authorization = value
        elif name in FORWARDED:
            self._forwarded.append(name + b": " + value + b"\r\n")
            if name == b"inference-header-content-length":
                self._header_length = value
        elif name == b"content-length":
            if value.isdigit() and int(value) > self.max_body:
                raise _Refusal(413, self._too_large())
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        if self._expect_continue:
            if self.busy or self._pending:
                self._continue_owed = True  # after the answers before it, in order
            else:
                self.transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.max_body:
            raise _Refusal(413, self._too_large())
        self._body.append(body)

    def on_message_complete(self) -> None:
        parts = self._body
        body = b"" if not parts else parts[0] if len(parts) == 1 else b"".join(parts)
        request = Request(
            self._parser.get_method(),
            self._url,
            self._authorization,
            self._forwarded,
            self._header_length,
            body,
            self._parser.should_keep_alive(),
        )
        self._reset()
        self._continue_owed = False
        self._pending.append(request)
        if len(self._pending) >= MAX_PIPELINED and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        self._next()

    # answering
    def respond(self, data: bytes | list[bytes], keep_alive: bool) -> None:
        """The answer to the request being handled: write it, then take the next one."""
        if self.closed:
            return  # the client went away meanwhile
        self.activity += 1
        if type(data) is bytes:
            self.transport.write(data)
        else:
            self.transport.writelines(data)
        if not keep_alive:
            self._close()
            return
        self.busy = False
        self._next()

    def _next(self) -> None:
        if self._dispatching:
            return  # the loop below is on the stack: it takes the next one
        self._dispatching = True
        try:
            while self._pending and not self.busy and not self.closed and not self._write_paused:
                self.busy = True
                request = self._pending.popleft()
                try:
                    self.handler.handle(self, request)
                except Exception:  # a bug: answered and logged, the connection not left hanging
                    log.exception("the gateway failed on %r", request.url)
                    self.respond(own_answer(500, FAILED, keep_alive=False), keep_alive=False)
            resumable = self._refusal is None and not self.closed
            if self._read_paused and resumable and len(self._pending) < MAX_PIPELINED // 2:
                self._read_paused = False
                self.transport.resume_reading()
            if not self.busy and not self._pending and not self.closed:
                if self._refusal is not None:
                    self.transport.write(self._refusal)
                    self._close()
                elif self._continue_owed:
                    self._continue_owed = False
                    self.transport.write(CONTINUE)
        finally:
            self._dispatching = False

    def _too_large(self) -> str:
        return f"request body over {self.max_body} bytes (MODELHUB_GATEWAY_MAX_BODY_BYTES)"

    def _refuse(self, status: int, message: str) -> None:
        """A request that cannot be read: answered after the whole ones before it, then close."""
        if self.closed or self._refusal is not None:
            return
        self._refusal = own_answer(status, message, keep_alive=False)
        if not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()  # nothing after it can be parsed
        self._next()

    def _close(self) -> None:
        self.closed = True
        self._pending.clear()
        self.transport.close()

    def close_if_idle(self) -> bool:
        if not self.busy and not self._pending:
            self._close()
            return True
        return False


class Server:
    """Serves `handler` (start(), stop(), handle()) on host:port until stop() is called.

    run() in the main thread (python -m modelhub.gateway), or start_in_thread() for tests."""

    def __init__(self, handler, host: str, port: int, max_body: int, reuse_port: bool = False, grace_s: float = 10.0):
        self.handler = handler
        self.host = host
        self.port = port
        self.max_body = max_body
        self.reuse_port = reuse_port
        self.grace_s = grace_s
        self.connections: set[HttpConnection] = handler.connections  # the handler counts them in its stats
        self.started = threading.Event()
        self.startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    async def serve(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.handler.start()  # the first routing table before the first request
        try:
            listener = await loop.create_server(
                lambda: HttpConnection(self.handler, self.connections, self.max_body),
                self.host,
                self.port,
                reuse_port=self.reuse_port or None,
                backlog=1024,
            )
            sweeper = loop.create_task(self._sweep_idle())
            self.started.set()
            await self._stop.wait()
            # Graceful: no new connections, the requests under way answered, then close.
            listener.close()
            sweeper.cancel()
            await self._drain()
        finally:
            await self.handler.stop()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        while True:
            for connection in list(self.connections):
                connection.close_if_idle()
            if not self.connections or loop.time() >= deadline:
                break
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection._close()

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(IDLE_TIMEOUT_S)
            for connection in list(self.connections):
                if connection.activity == connection.swept_at and not connection.busy:
                    connection._close()
                connection.swept_at = connection.activity

    def stop(self) -> None:
        """From any thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def start_in_thread(self, timeout: float = 10.0) -> None:
        import uvloop

        def run() -> None:
            try:
                uvloop.run(self.serve())
            except BaseException as exc:
                self.startup_error = exc
                self.started.set()

        self._thread = threading.Thread(target=run, name=f"gateway-{self.port}", daemon=True)
        self._thread.start()
        if not self.started.wait(timeout):
            raise RuntimeError(f"the gateway did not start within {timeout} s")
        if self.startup_error is not None:
            raise RuntimeError(f"the gateway did not start: {self.startup_error!r}") from self.startup_error

    def join(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
