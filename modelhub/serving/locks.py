"""Locks across processes and machines: one reconciler at a time per model on
a server (`model_lock`), one check pass of a kind at a time (`named_lock`).

The reconciler's lock is per (server, model), not per server: Triton loads different
models in parallel, so a model whose load takes minutes must not hold back
the others on its server.
"""

import fcntl
import hashlib
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection


def _advisory_key(name: str) -> int:
    # One signed 64-bit key, hashed with a namespace so ours stay apart from
    # other users of advisory locks. A collision would only make two holders
    # take turns, never let two runs hold one lock at once.
    digest = hashlib.blake2b(f"modelhub.{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def model_lock(server_id: int, model_id: int):
    """Yield True if this process now holds the lock of this model on this server, False if another does."""
    return named_lock(f"reconcile:{server_id}:{model_id}", filename=f"server-{server_id}-model-{model_id}")


@contextmanager
def named_lock(name: str, filename: str | None = None):
    """Yield True if this process now holds the lock called `name`, False if another does (never waits).

    Postgres: a session advisory lock on this thread's connection, released on
    exit or when the connection dies with its worker. SQLite (the
    single-machine default): a file lock.
    """
    if connection.vendor == "postgresql":
        key = _advisory_key(name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            acquired = cursor.fetchone()[0]
        try:
            yield acquired
        finally:
            if acquired:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return
    lock_dir = Path(settings.VAR_DIR) / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    safe = filename or hashlib.blake2b(name.encode(), digest_size=12).hexdigest()
    with open(lock_dir / f"{safe}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
