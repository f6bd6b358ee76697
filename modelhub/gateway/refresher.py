"""Keeps the gateway's routing table and token cache in step with the database.

A background thread re-reads the routing rows and the tokens every
MODELHUB_GATEWAY_REFRESH_S (1 s by default) and swaps a new table in when the rows
changed. The request path only reads the current references: no query per request.
"""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections, connections

from .routing import RoutingTable, Snapshot, build_table, read_snapshot
from .tokens import CachedToken, read_tokens, record_last_used

log = logging.getLogger(__name__)


class Refresher:
    def __init__(self, alias: str, interval_s: float, read_token_cache: bool):
        self.alias = alias
        self.interval_s = interval_s
        self.read_token_cache = read_token_cache
        self.table = RoutingTable()
        self.tokens: dict[str, CachedToken] = {}
        self.tokens_seen: set[str] = set()  # prefixes the request path accepted since the last refresh
        self.loaded = False  # True once one refresh has succeeded
        self.rebuilds = 0
        self._snapshot: Snapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        snapshot = read_snapshot(self.alias)
        if snapshot != self._snapshot:
            self.table = build_table(snapshot, self.alias, self.table)
            self._snapshot = snapshot
            self.rebuilds += 1
        if self.read_token_cache:
            record_last_used(self.tokens_seen, self.tokens)  # before the read, so the cache has the new times
            self.tokens = read_tokens()
        self.loaded = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._refresh_forever, name="gateway-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _refresh_forever(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    self.refresh()
                except Exception:
                    # Keep serving from the last good table; the database may be back next time.
                    log.exception("refreshing the gateway's routing table failed")
                    close_old_connections()
        finally:
            connections.close_all()  # this thread's own: a test database can then be dropped
