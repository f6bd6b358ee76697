"""One reconciler at a time per server, across processes and machines."""

import fcntl
import zlib
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

_NAMESPACE = zlib.crc32(b"modelhub.reconcile") & 0x7FFFFFFF  # int4; keeps our advisory keys apart from others'


@contextmanager
def server_lock(server_id: int):
    """Yield True if this process now holds the server's lock, False if another does.

    Postgres: a session advisory lock, released on exit or when the connection
    dies with its worker. SQLite (the single-machine default): a file lock.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_NAMESPACE, server_id])
            acquired = cursor.fetchone()[0]
        try:
            yield acquired
        finally:
            if acquired:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_NAMESPACE, server_id])
        return
    lock_dir = Path(settings.VAR_DIR) / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"server-{server_id}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
