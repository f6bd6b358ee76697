"""Postgres restarted under a running web server and worker (a cluster of the test's own):
the first requests after it succeed (no 500 from a stale kept connection), and a check
pass that met the outage is recorded once it can be, exactly once."""

import psycopg
import pytest
import requests
from celery import Celery

from modelhub.serving.models import InferenceServer
from tests.faults.processes import free_port, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

SHARED_REDIS = "redis://127.0.0.1:6379/6"  # this helper's Redis database (no outage here)


def results_of(database_url: str, task_id: str) -> int:
    with psycopg.connect(database_url, connect_timeout=3) as conn:
        return conn.execute(
            "SELECT count(*) FROM monitoring_checkresult WHERE dedupe_key LIKE %s", [f"health:{task_id}:%"]
        ).fetchone()[0]


def test_after_a_postgres_restart_requests_succeed_and_a_pass_during_it_is_recorded_once(
    own_postgres, processes, admin_token, monkeypatch
):
    import redis

    redis.Redis.from_url(SHARED_REDIS).flushdb()
    # Nothing listens there: the health pass records a "down" result at once, no Triton needed.
    InferenceServer.objects.create(name="nobody-home", base_url=f"http://127.0.0.1:{free_port()}")
    source = processes.env(broker=SHARED_REDIS)["DATABASE_URL"]
    database = own_postgres.copy_database(source, "modelhub")  # the rows above, the token, the schema

    env = processes.env(database_url=database, broker=SHARED_REDIS)
    worker = processes.worker(env, ["checks"])
    web = processes.web(env)
    processes.wait_until_ready(worker)
    api = {"Authorization": f"Bearer {admin_token}"}

    def servers_page() -> requests.Response:
        return requests.get(f"{web}/api/v1/servers/", headers=api, timeout=30)

    assert servers_page().status_code == 200  # the web worker now keeps a connection (CONN_MAX_AGE)
    monkeypatch.setenv("CELERY_BROKER_URL", SHARED_REDIS)  # Celery reads it before its broker argument
    queue = Celery(broker=SHARED_REDIS, set_as_current=False)  # the tests keep their own current app

    def run_health_pass(task_id: str) -> None:
        queue.send_task("modelhub.monitoring.tasks.health_pass", task_id=task_id, queue="checks")

    run_health_pass("before")
    wait_for(lambda: results_of(database, "before") == 1, 30, "the pass before the restart to be recorded")

    own_postgres.stop()
    run_health_pass("during")  # meets the outage: the worker cannot record it now
    wait_for(lambda: "Retry in" in processes.log_of(worker), 20, "the worker to retry the pass")
    own_postgres.start()

    for _ in range(3):  # the kept connection died with the old server: each request must still succeed
        answer = servers_page()
        assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["name"] == "nobody-home"

    wait_for(lambda: results_of(database, "during") == 1, 30, "the pass that met the outage to be recorded")
    run_health_pass("during")  # delivered again (a redelivery, a second worker): still recorded once
    run_health_pass("after")
    wait_for(lambda: results_of(database, "after") == 1, 30, "a pass after the restart to be recorded")
    assert results_of(database, "during") == 1
    assert results_of(database, "before") == 1
