"""Races through the API: ones schemathesis found, pinned down deterministically enough to
stay fixed, and 20-way write races through a real web server on SQLite and on Postgres."""

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import requests
from django.db import OperationalError, connection, transaction

from modelhub.api.errors import exception_handler
from modelhub.audit.actors import Actor
from modelhub.registry.models import Alias, Model
from modelhub.registry.services import move_alias
from modelhub.settings import BASE_DIR
from tests.api.conftest import error_of
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip


@pytest.mark.django_db(transaction=True)
def test_an_alias_move_cannot_deadlock_with_a_model_delete(registered):
    """delete_model locks the model row, then deletes the model's aliases. An alias move
    that locked its alias row before the model row made a lock cycle: Postgres killed
    one side with a deadlock error, which the API answered with a 500."""
    model = registered("digits", versions=2)
    move_alias(model, "production", model.versions.get(number=1), Actor())
    model_locked, errors = threading.Event(), []

    def delete_like_delete_model():
        try:
            with transaction.atomic():
                Model.objects.select_for_update().get(pk=model.pk)
                model_locked.set()
                time.sleep(0.5)  # the alias move starts meanwhile and must wait behind us
                Alias.objects.filter(model=model).delete()
        except Exception as exc:  # any error fails the test below
            errors.append(exc)
        finally:
            connection.close()

    def move():
        model_locked.wait()
        try:
            move_alias(model, "production", model.versions.get(number=2), Actor())
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=delete_like_delete_model), threading.Thread(target=move)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert Alias.objects.get(model=model, name="production").version.number == 2


# Transactional tests flush the roles (groups) the data migration wrote; the API
# fixtures re-create the ones they need (tests/api/conftest.py make_user).

# --- 20-way write races through a real web server, on SQLite and on Postgres ----------
#
# The default run (scripts/run) serves SQLite through gunicorn with several workers and
# threads; CI pipelines upload, promote and deploy in parallel. Each race fires RACE
# requests at once and checks that none answers 500 (a conflict that remains is a 409 or
# a 503 with Retry-After) and that the state afterwards is consistent.

RACE = 20
# What the web server's prepare step runs: migrate, a superuser, an admin token (printed).
PREPARE = """
import django
django.setup()
from django.contrib.auth.models import User
from django.core.management import call_command
from modelhub.api.tokens import issue_token
from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
call_command("migrate", interactive=False, verbosity=0)
user = User.objects.create_superuser("racer", "racer@example.com", "racer-password")
_, text = issue_token(name="race", user=user, scopes=["read", "upload", "deploy", "admin"], models=[],
                      expires_at=None, actor=Actor(source=Source.CLI))
print(text)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(database_url: str, var_dir: Path) -> dict[str, str]:
    var_dir.mkdir(parents=True, exist_ok=True)
    (var_dir / "staticfiles").mkdir(exist_ok=True)
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modelhub.settings",
        "DATABASE_URL": database_url,
        "MODELHUB_VAR_DIR": str(var_dir),
        "CELERY_BROKER_URL": "memory://localhost/",
        # The reconciler runs in the web process after each deploy commits: its writes of
        # observed state race the requests too, as a worker's would.
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "MODELHUB_LOG_LEVEL": "WARNING",
    }


def _prepare_sqlite(database_url: str, var_dir: Path) -> str:
    """Migrate a fresh SQLite file and make an admin token in it, as `scripts/run` would."""
    prepared = subprocess.run(
        [sys.executable, "-c", PREPARE],
        cwd=BASE_DIR,
        env=_env(database_url, var_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert prepared.returncode == 0, prepared.stderr
    return prepared.stdout.split()[-1]


@contextlib.contextmanager
def _web_server(database_url: str, var_dir: Path):
    """ModelHub under gunicorn, as scripts/run starts it (workers × threads), on a free port."""
    env = _env(database_url, var_dir)
    port = _free_port()
    log_path = var_dir / "web.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "modelhub.wsgi", "--bind", f"127.0.0.1:{port}"]
            + ["--workers", "2", "--threads", "10", "--preload", "--timeout", "120", "--log-level", "warning"],
            cwd=BASE_DIR,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()[-4000:]
            try:
                answer = requests.get(f"{root}/healthz", timeout=10)
                assert answer.status_code == 200, log_path.read_text()[-4000:]
                break
            except (requests.ConnectionError, requests.Timeout):  # still starting
                pass
            assert time.monotonic() < deadline, "gunicorn did not answer within 60 s"
            time.sleep(0.2)
        yield f"{root}/api/v1", log_path
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # quick shutdown: SIGTERM would wait for idle keep-alives
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _race(token: str, requests_to_send: list[tuple[str, str, dict]]) -> list[requests.Response]:
    """Send every (method, url, kwargs) at once: all threads wait at a barrier, then go."""
    barrier = threading.Barrier(len(requests_to_send))

    def send(request):
        method, url, kwargs = request
        with requests.Session() as http:  # one connection per request: truly concurrent
            http.headers["Authorization"] = f"Bearer {token}"
            barrier.wait()
            return http.request(method, url, timeout=90, **kwargs)

    with ThreadPoolExecutor(len(requests_to_send)) as pool:
        return list(pool.map(send, requests_to_send))


def _assert_no_server_errors(what: str, responses: list[requests.Response], success: int) -> list[int]:
    """Every answer is a success, a 409 or a 503 with Retry-After; returns the successes' indexes."""
    statuses = Counter(response.status_code for response in responses)
    for response in responses:
        assert response.status_code in (success, 409, 503), f"{what}: {statuses}: {response.text}"
        if response.status_code == 503:
            assert response.headers.get("Retry-After"), f"{what}: 503 without Retry-After"
    return [i for i, response in enumerate(responses) if response.status_code == success]


def _all(http: requests.Session, url: str) -> list[dict]:
    """Every row of a list endpoint, following its `next` links."""
    rows = []
    while url:
        page = http.get(url, timeout=30)
        assert page.status_code == 200, page.text
        rows += page.json()["results"]
        url = page.json()["next"]
    return rows


def _run_the_races(base: str, token: str, tmp_path: Path) -> Counter:
    """Upload, move an alias and deploy, RACE requests at once each; the statuses of all."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    manifest = json.dumps(DOUBLER_MANIFEST)
    artifacts = [make_zip(tmp_path / f"race-{i}.zip", {"1/model.py": doubler_source(i + 2)}) for i in range(RACE)]

    # Uploads of distinct versions of one new model: the model is created once, numbers are 1..n.
    uploads = _race(
        token,
        [
            (
                "POST",
                f"{base}/models/race/versions/",
                {"files": {"artifact": a.read_bytes()}, "data": {"manifest": manifest}},
            )
            for a in artifacts
        ],
    )
    created = _assert_no_server_errors("upload", uploads, 201)
    assert created, "no upload succeeded"
    numbers = sorted(v["number"] for v in _all(http, f"{base}/models/race/versions/?limit=100"))
    assert numbers == list(range(1, len(created) + 1))
    assert sorted(uploads[i].json()["number"] for i in created) == numbers
    assert [m["name"] for m in _all(http, f"{base}/models/")] == ["race"]

    # Alias moves, each to another version: one alias row, one AliasMove per effective move.
    targets = [numbers[i % len(numbers)] for i in range(RACE)]
    moves = _race(
        token, [("PUT", f"{base}/models/race/aliases/production/", {"json": {"version": n}}) for n in targets]
    )
    moved = _assert_no_server_errors("alias move", moves, 200)
    aliases = _all(http, f"{base}/models/race/aliases/")
    assert len(aliases) == 1 and aliases[0]["name"] == "production"
    history = _all(http, f"{base}/models/race/alias-history/?limit=100")  # newest first
    chain = [(m["from_version"], m["to_version"]) for m in reversed(history)]
    assert chain[0][0] is None and chain[-1][1] == aliases[0]["version"]
    assert all(a[1] == b[0] for a, b in zip(chain, chain[1:], strict=False)), chain  # no lost update
    if len(set(targets)) == RACE:  # every move changed the alias: each success is one row
        assert len(history) == len(moved)

    # Deploys of five versions, four requests each, to a server nothing listens on.
    server = http.post(f"{base}/servers/", json={"name": "dead", "base_url": "http://127.0.0.1:9"}, timeout=30)
    assert server.status_code == 201, server.text
    versions = [numbers[i % min(5, len(numbers))] for i in range(RACE)]
    deploys = _race(
        token,
        [("POST", f"{base}/models/race/versions/{n}/deploy/", {"json": {"server": "dead"}}) for n in versions],
    )
    deployed = _assert_no_server_errors("deploy", deploys, 202)
    rows = _all(http, f"{base}/deployments/?server=dead&limit=100")
    assert sorted(d["version"] for d in rows) == sorted({versions[i] for i in deployed})
    assert {d["desired"] for d in rows} == {"loaded"}
    audited = _all(http, f"{base}/audit/?action=deployment.deploy")
    assert len(audited) == len(deployed)
    return Counter(response.status_code for response in uploads + moves + deploys)


def test_twenty_way_write_races_on_sqlite_answer_no_500(tmp_path):
    url = f"sqlite:///{tmp_path / 'modelhub.sqlite3'}"
    token = _prepare_sqlite(url, tmp_path / "var")
    with _web_server(url, tmp_path / "var") as (base, log_path):
        statuses = _run_the_races(base, token, tmp_path)
    # WAL, a busy timeout and immediate transactions make each writer wait its turn:
    # on SQLite not even the 503 is needed (without them, 6 to 15 of 20 failed).
    assert statuses == {201: RACE, 200: RACE, 202: RACE}, log_path.read_text()[-4000:]


@pytest.mark.django_db(transaction=True)
def test_twenty_way_write_races_on_postgres_answer_no_500(tmp_path, make_user, make_token):
    token = make_token("read", "upload", "deploy", "admin", user=make_user("racer", is_superuser=True))
    db = connection.settings_dict
    url = (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )
    connection.close()  # the web server's requests must not wait behind this test's session
    with _web_server(url, tmp_path / "var") as (base, _):
        _run_the_races(base, token, tmp_path)


# --- a conflict that outlasts the database's wait answers 503 with Retry-After ----------


@pytest.mark.django_db(transaction=True)
def test_a_write_that_waits_too_long_for_a_postgres_lock_answers_503_with_retry_after(admin_api, registered):
    registered("digits")
    db = connection.settings_dict
    blocker = psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"]
    )
    try:
        # Another session holds the model row, as a long upload of the same model would.
        blocker.execute("SELECT id FROM registry_model WHERE name = 'digits' FOR UPDATE")
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        response = admin_api.put("/api/v1/models/digits/aliases/production/", {"version": 1}, format="json")
    finally:
        blocker.close()
        connection.close()  # drops the session setting
    assert response.status_code == 503, response.json()
    assert response.headers["Retry-After"] == "2"
    assert error_of(response)["code"] == "busy"
    assert not Alias.objects.exists()


def test_sqlite_busy_answers_503_with_retry_after(tmp_path):
    path = tmp_path / "busy.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # holds the write lock
    waiter = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    try:
        try:
            waiter.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise OperationalError(str(exc)) from exc  # as Django's DatabaseErrorWrapper raises it
    except OperationalError as exc:
        response = exception_handler(exc, {})
    finally:
        holder.close()
        waiter.close()
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert response.data["error"]["code"] == "busy"
