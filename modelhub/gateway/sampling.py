"""Samples of inference traffic for drift monitoring, off the request path.

The request path only appends to a bounded in-memory buffer (a deque append, no
lock, no I/O, nothing parsed); when the buffer is full the sample is dropped and counted. A
background thread drains it in batches to the sink,
`modelhub.monitoring.sampling.write_samples(samples)` by default, which parses the
bodies and stores them. A sink that is missing or fails loses its batch, counted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from django.db import close_old_connections, connections
from django.utils.module_loading import import_string

log = logging.getLogger(__name__)

DEFAULT_SINK = "modelhub.monitoring.sampling.write_samples"


class SampleBuffer:
    def __init__(self, capacity: int, batch_size: int, sink: str | Callable = DEFAULT_SINK, idle_wait_s: float = 0.2):
        self.capacity = capacity
        self.batch_size = batch_size
        self._sink_ref = sink
        self._idle_wait_s = idle_wait_s
        self._items: deque = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Counters: kept (in the buffer), dropped (buffer full), written (sink took them),
        # lost (sink missing or failed). Each is written by one thread only.
        self.kept = self.dropped = self.written = self.lost = 0

    def offer(
        self,
        model: str,
        version: int,
        request_body: bytes,
        binary_header_length: bytes | None,
        response_head: bytes,
        response_body: list[bytes],
    ) -> None:
        """On the request path: keep the sample if there is room, else drop and count it.

        Headers as the gateway has them (the raw Inference-Header-Content-Length value,
        Triton's head) and the response body in its parts: the drain thread parses and joins."""
        if len(self._items) >= self.capacity:
            self.dropped += 1
            return
        self._items.append(
            (time.time(), model, version, request_body, binary_header_length, response_head, response_body)
        )
        self.kept += 1
        if len(self._items) >= self.batch_size:
            self._wake.set()

    def stats(self) -> dict:
        return {
            "buffered": len(self._items),
            "capacity": self.capacity,
            "kept": self.kept,
            "dropped": self.dropped,
            "written": self.written,
            "lost": self.lost,
        }

    def start(self) -> None:
        self._thread = threading.Thread(target=self._drain_forever, name="gateway-sampling", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _drain_forever(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(self._idle_wait_s)
                self._wake.clear()
                while self._items and not self._stop.is_set():
                    self._write_batch(self._take_batch())
        finally:
            connections.close_all()  # this thread's own

    def _take_batch(self) -> list[tuple]:
        batch = []
        while self._items and len(batch) < self.batch_size:
            batch.append(self._items.popleft())
        return batch

    def _write_batch(self, batch: list[tuple]) -> None:
        sink = self._sink()
        if sink is None:
            self.lost += len(batch)
            return
        try:
            sink([_as_sample(*item) for item in batch])
            self.written += len(batch)
        except Exception:
            log.exception("the sampling sink failed; %d samples lost", len(batch))
            self.lost += len(batch)
            close_old_connections()  # a broken connection must not break the next batch

    def _sink(self) -> Callable | None:
        if callable(self._sink_ref):
            return self._sink_ref
        try:
            self._sink_ref = import_string(self._sink_ref)
        except ImportError:
            return None  # the sink is not installed (yet): drop and count
        return self._sink_ref


def _as_sample(
    at: float, model: str, version: int, request_body: bytes, raw_length, response_head: bytes, response_body
) -> dict:
    """The sink's dict; parsing happens here, in the drain thread."""
    header_length = _length(raw_length)
    return {
        "time": datetime.fromtimestamp(at, UTC),
        "model": model,
        "version": version,
        "request_id": _request_id(request_body, header_length),
        "request_body": request_body,
        "binary_header_length": header_length,
        "response_body": b"".join(response_body),
        "response_binary_header_length": _header_length(response_head),
    }


def _request_id(body: bytes, header_length: int | None) -> str:
    """The client's own request id (the inference header's "id"), else a fresh one."""
    try:
        header = json.loads(body[:header_length] if header_length is not None else body)
        given = header.get("id") if isinstance(header, dict) else None
    except ValueError:
        given = None
    return str(given) if given not in (None, "") else uuid.uuid4().hex


def _length(value: bytes | None) -> int | None:
    """An Inference-Header-Content-Length value; one that is no number counts as absent."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _header_length(head: bytes) -> int | None:
    """Inference-Header-Content-Length from an HTTP head (status line and headers)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"inference-header-content-length":
            return _length(value.strip())
    return None
