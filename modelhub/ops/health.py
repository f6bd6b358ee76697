"""What /healthz/ready checks: the database answers, every migration is applied, the
broker takes connections. Each check returns None when fine, or a short problem text
that names nothing secret (no host, user or URL: those go to the log)."""

import logging
import os

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

log = logging.getLogger(__name__)

# Migrations once found applied stay applied for the life of the process: the check
# (which reads every migration file) then costs nothing at the next probe.
_migrated = False


def database() -> str | None:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # A probe must not hang on a stuck server; LOCAL: only this transaction's.
                cursor.execute("SET LOCAL statement_timeout = %s", [int(settings.READY_TIMEOUT_S * 1000)])
            cursor.execute("SELECT 1")
    except DatabaseError:
        log.exception("ready: the database does not answer")
        return "database unavailable"
    return None


def migrations() -> str | None:
    global _migrated
    if _migrated:
        return None
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError:
        log.exception("ready: cannot read the applied migrations")
        return "migrations unknown (database unavailable)"
    if plan:
        return f"{len(plan)} migrations not applied (run manage.py migrate)"
    _migrated = True
    return None


def broker() -> str | None:
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem://"):
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_out"]
        if not os.access(folder, os.W_OK):
            log.error("ready: the broker folder %s is not writable", folder)
            return "broker unavailable"
        return None
    from modelhub.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=settings.READY_TIMEOUT_S)
    except Exception:  # kombu raises its own, the transport's or OSError, by transport
        log.exception("ready: the broker does not answer")
        return "broker unavailable"
    return None


CHECKS = {"database": database, "migrations": migrations, "broker": broker}


def status() -> dict[str, str]:
    """{check: "ok" or what is wrong}. Migrations are not read while the database is down."""
    found = {}
    for name, check in CHECKS.items():
        if name == "migrations" and found["database"] != "ok":
            found[name] = "not checked"
            continue
        found[name] = check() or "ok"
    return found
