"""/healthz/live and /healthz/ready on a real gunicorn: what each waits for, and that their
answers name nothing secret (anyone on the network may call them)."""

import psycopg
import pytest

from tests.ops.conftest import database_url

pytestmark = pytest.mark.django_db


def test_live_and_ready_answer_ok_with_database_migrations_and_redis_broker_up(web):
    server = web(CELERY_BROKER_URL="redis://127.0.0.1:6379/5")

    live, ready = server.get("/healthz/live"), server.get("/healthz/ready")

    assert live.status_code == 200 and live.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "migrations": "ok", "broker": "ok"}}
    assert live.headers["Cache-Control"].startswith("max-age=0")
    assert server.get("/healthz").status_code == 200  # the older path still answers


def test_a_database_down_is_not_ready_but_still_live_and_names_no_host_or_user(web):
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    secret = "postgres://opsuser:s3cretpw@127.0.0.1:9/modelhub_prod"
    server = web(DATABASE_URL=secret, MODELHUB_READY_TIMEOUT_S="1")

    live, ready = server.get("/healthz/live"), server.get("/healthz/ready")

    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "checks": {"database": "database unavailable", "migrations": "not checked", "broker": "ok"},
    }
    for word in ("opsuser", "s3cretpw", "127.0.0.1", "modelhub_prod"):
        assert word not in ready.text
    assert "ready: the database does not answer" in server.output()  # the detail goes to the log


def test_a_broker_down_is_not_ready_naming_the_broker_only(web):
    server = web(CELERY_BROKER_URL="redis://:hunter2@127.0.0.1:9/0", MODELHUB_READY_TIMEOUT_S="1")

    ready = server.get("/healthz/ready")

    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "ok", "migrations": "ok", "broker": "broker unavailable"}
    assert "hunter2" not in ready.text and "6379" not in ready.text


@pytest.fixture
def empty_database():
    url = database_url().rsplit("/", 1)[0] + "/postgres"
    name = "mh_45_unmigrated"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    yield database_url().rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_unapplied_migrations_are_not_ready(web, empty_database):
    server = web(DATABASE_URL=empty_database)

    ready = server.get("/healthz/ready")

    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["migrations"].endswith("migrations not applied (run manage.py migrate)")
    assert int(checks["migrations"].split()[0]) > 10
