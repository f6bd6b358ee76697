"""One reconciler at a time per model on a server, across processes and machines.

The lock is per (server, model), not per server: Triton loads different
models in parallel, so a model whose load takes minutes must not hold back
the others on its server.
"""

import fcntl
import hashlib
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection


def _advisory_key(server_id: int, model_id: int) -> int:
    # One signed 64-bit key, hashed with a namespace so ours stay apart from
    # other users of advisory locks. A collision would only make two models
    # take turns, never let two runs reconcile one model at once.
    digest = hashlib.blake2b(f"modelhub.reconcile:{server_id}:{model_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def model_lock(server_id: int, model_id: int):
    """Yield True if this process now holds the lock of this model on this server, False if another does.

    Postgres: a session advisory lock on this thread's connection, released on
    exit or when the connection dies with its worker. SQLite (the
    single-machine default): a file lock.
    """
    if connection.vendor == "postgresql":
        key = _advisory_key(server_id, model_id)
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
    with open(lock_dir / f"server-{server_id}-model-{model_id}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
