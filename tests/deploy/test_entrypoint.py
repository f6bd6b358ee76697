"""docker/entrypoint.sh as a plain script: with stand-ins for python, gunicorn and celery on
PATH (each records how it was called), and docker/wait_for_db.py against real Postgres."""

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from tests.deploy.manifests import DOCKER, ENTRYPOINT, REPO

BIN = Path(sys.executable).parent
WAIT = str(DOCKER / "wait_for_db.py")
STAND_IN = """#!/usr/bin/env bash
# Records its name, pid and arguments; fails when FAIL_<NAME> says so.
printf '%s\\t%s' "$(basename "$0")" "$$" >> "$CALLS"
printf '\\t%s' "$@" >> "$CALLS"
printf '\\n' >> "$CALLS"
echo "${PROMETHEUS_MULTIPROC_DIR:-}" > "$CALLS.metrics"
var="FAIL_$(basename "$0")"
[[ -n "${!var:-}" && " $* " == *" ${!var} "* ]] && { echo "stand-in $(basename "$0") fails" >&2; exit 1; }
exit 0
"""


@pytest.fixture
def run(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("python", "gunicorn", "celery"):
        (fake / name).write_text(STAND_IN)
        (fake / name).chmod(0o755)
    calls = tmp_path / "calls.tsv"

    def run(*args, **extra_env):
        calls.write_text("")
        env = {"PATH": f"{fake}:/usr/bin:/bin", "CALLS": str(calls), **extra_env}
        proc = subprocess.Popen(
            ["bash", str(ENTRYPOINT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        out, err = proc.communicate(timeout=30)
        lines = [line.split("\t") for line in calls.read_text().splitlines()]
        return proc, [[line[0], *line[2:]] for line in lines], [line[1] for line in lines], err

    return run


def test_the_script_passes_shellcheck():
    result = subprocess.run([BIN / "shellcheck", ENTRYPOINT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_web_waits_for_a_migrated_database_then_becomes_gunicorn(run):
    proc, calls, pids, _ = run("web")
    assert proc.returncode == 0
    assert calls == [
        ["python", WAIT, "--migrated"],
        ["gunicorn", "modelhub.wsgi", "--config", str(DOCKER / "gunicorn.conf.py")],
    ]
    # exec: gunicorn is the container's process (it gets SIGTERM), not a child of the script.
    assert pids[-1] == str(proc.pid)


def test_gateway_listens_on_every_address_with_extra_arguments_passed_on(run):
    proc, calls, pids, _ = run("gateway", "--workers", "4")
    assert proc.returncode == 0
    assert calls == [
        ["python", WAIT, "--migrated"],
        ["python", "-m", "modelhub.gateway", "--host", "0.0.0.0", "--workers", "4"],
    ]
    assert pids[-1] == str(proc.pid)


def test_worker_consumes_the_queues_it_is_given(run):
    proc, calls, pids, _ = run("worker", "checks,notify", "--concurrency", "2", MODELHUB_LOG_LEVEL="WARNING")
    assert proc.returncode == 0
    assert calls == [
        ["python", WAIT, "--migrated", "--queues", "checks,notify"],
        ["celery", "-A", "modelhub", "worker", "-n", "checks-notify@%h", "-Q", "checks,notify", "-O", "fair"]
        + ["--loglevel", "WARNING", "--concurrency", "2"],
    ]
    assert pids[-1] == str(proc.pid)


@pytest.mark.parametrize("mode", [("web",), ("worker", "checks")])
def test_web_and_workers_get_a_fresh_metrics_folder_unless_given_one(run, tmp_path, mode):
    stale = tmp_path / f"modelhub-metrics-{mode[0]}" / "counter_123.db"
    stale.parent.mkdir()
    stale.write_text("a counter of a process gone")
    proc, _, _, _ = run(*mode, TMPDIR=str(tmp_path))
    assert proc.returncode == 0
    assert (tmp_path / "calls.tsv.metrics").read_text().strip() == str(stale.parent)
    assert stale.parent.is_dir() and not stale.exists()
    # One given (shared with other processes on purpose) is used as it is.
    given = tmp_path / "shared"
    given.mkdir()
    (given / "counter_456.db").write_text("another process's")
    proc, _, _, _ = run(*mode, TMPDIR=str(tmp_path), PROMETHEUS_MULTIPROC_DIR=str(given))
    assert (tmp_path / "calls.tsv.metrics").read_text().strip() == str(given)
    assert (given / "counter_456.db").exists()


@pytest.mark.parametrize("args", [("worker",), ("worker", "--concurrency", "2")])
def test_worker_without_queues_is_refused(run, args):
    proc, calls, _, err = run(*args)
    assert proc.returncode == 2
    assert calls == []
    assert "worker needs its queues first" in err


def test_beat_and_migrate(run):
    proc, calls, _, _ = run("beat")
    assert proc.returncode == 0
    assert calls == [["python", WAIT, "--migrated"], ["celery", "-A", "modelhub", "beat", "--loglevel", "INFO"]]
    # Only migrate migrates, and it does not wait for migrations to be applied (it applies them).
    proc, calls, _, _ = run("migrate")
    assert proc.returncode == 0
    assert calls == [["python", WAIT], ["python", "manage.py", "migrate", "--noinput"]]
    proc, calls, _, _ = run("manage", "createsuperuser", "--noinput")
    assert calls == [["python", WAIT], ["python", "manage.py", "createsuperuser", "--noinput"]]


@pytest.mark.parametrize("mode", ["webb", "celery", "gunicorn"])
def test_an_unknown_mode_fails_clearly_and_runs_nothing(run, mode):
    proc, calls, _, err = run(mode)
    assert proc.returncode == 2
    assert calls == []
    assert f"entrypoint: unknown mode '{mode}'" in err
    assert "usage: entrypoint.sh web | gateway" in err


def test_no_mode_prints_the_usage(run):
    proc, calls, _, err = run()
    assert proc.returncode == 2 and calls == [] and "usage:" in err


def test_a_database_that_never_comes_stops_the_start(run):
    proc, calls, _, err = run("web", FAIL_python=WAIT)
    assert proc.returncode == 1
    assert calls == [["python", WAIT, "--migrated"]]  # gunicorn never started


# --- docker/wait_for_db.py, for real -------------------------------------------------------


def _wait_for_db(*args, database_url: str, limit: float = 2.0, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELHUB_", "DJANGO_"))}
    env |= {
        "DATABASE_URL": database_url,
        "WAIT_FOR_DB_S": str(limit),
        "MODELHUB_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "modelhub.settings",
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, WAIT, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    return result, time.monotonic() - started


@pytest.fixture
def empty_database():
    """A database of its own (created and dropped here) on the test suite's Postgres server."""
    db = settings.DATABASES["default"]
    name = f"{db['NAME'].removeprefix('test_')}_entrypoint_{os.getpid()}"
    conninfo = {"host": db["HOST"], "port": db["PORT"] or 5432, "user": db["USER"], "password": db["PASSWORD"]}
    with psycopg.connect(dbname="postgres", autocommit=True, **conninfo) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    yield f"postgres://{db['USER']}{password}@{db['HOST']}:{conninfo['port']}/{name}"
    with psycopg.connect(dbname="postgres", autocommit=True, **conninfo) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_unreachable_database_is_waited_for_then_named(tmp_path):
    result, took = _wait_for_db(database_url="postgres://postgres@127.0.0.1:1/nothing", limit=2, tmp_path=tmp_path)
    assert result.returncode == 1
    assert 1.5 < took < 60
    assert "gave up after 2 s: postgresql database nothing on 127.0.0.1:1: cannot connect" in result.stderr


def test_a_database_with_migrations_pending_is_not_started_on(empty_database, tmp_path):
    # Reachable, but no schema: the web, gateway, workers and beat must not start on it.
    result, _ = _wait_for_db("--migrated", database_url=empty_database, limit=1, tmp_path=tmp_path)
    assert result.returncode == 1
    assert "migration(s) not applied yet" in result.stderr and "run the migrate mode" in result.stderr
    # The migrate mode's own wait (no --migrated): the connection is enough.
    result, _ = _wait_for_db(database_url=empty_database, limit=1, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.django_db  # the session then creates and migrates the test database
def test_the_migrate_mode_runs_the_real_migrate_then_the_others_start(tmp_path):
    # The test database (migrated by the session's setup, so this stays quick): the real
    # entrypoint with the real python and manage.py.
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    url = f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELHUB_", "DJANGO_"))}
    env |= {"PATH": f"{BIN}:{env['PATH']}", "DATABASE_URL": url, "MODELHUB_VAR_DIR": str(tmp_path)}
    env["DJANGO_SETTINGS_MODULE"] = "modelhub.settings"
    migrate = subprocess.run(
        ["bash", str(ENTRYPOINT), "migrate"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "Running migrations:" in migrate.stdout  # manage.py migrate's own report
    result, _ = _wait_for_db("--migrated", database_url=url, limit=1, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no wait at all


def test_a_queue_no_task_goes_to_is_refused(tmp_path):
    result, _ = _wait_for_db("--queues", "checks,chekcs", database_url="sqlite://:memory:", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "unknown queue(s) chekcs: the queues are celery, reconcile, checks, notify, accuracy" in result.stderr
