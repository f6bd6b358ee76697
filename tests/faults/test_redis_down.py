"""Redis (the task queue) down: pages and API reads still answer; a deploy is recorded and
answered with a 503 that says so; once Redis is back the worker's scheduled reconcile
loads what was recorded during the outage, and messages queued before it are not lost."""

import pytest
import redis
import requests
from celery import Celery
from django.test import Client

from modelhub.registry.services import get_or_create_model, register_version
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState
from tests.faults.processes import only_schedule, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]


def test_with_redis_down_reads_answer_a_deploy_is_recorded_with_a_503_and_done_once_redis_is_back(
    triton, own_redis, processes, admin_token, actor, doubler_zip, manifest, django_user_model, monkeypatch
):
    server = InferenceServer.objects.create(name="queue-outage", base_url=triton.http_url)
    model = get_or_create_model("waits-for-redis", actor)
    version = register_version(model, doubler_zip(7), manifest, actor).version
    only_schedule("reconcile-all-servers", 1)
    browser = Client()
    browser.force_login(django_user_model.objects.get(username="ops"))  # a session the web process accepts
    cookies = {"sessionid": browser.cookies["sessionid"].value}
    api = {"Authorization": f"Bearer {admin_token}"}

    env = processes.env(broker=own_redis.url)
    worker = processes.worker(env, ["celery", "reconcile"], beat=True)  # starts while the web server does
    web = processes.web(env)
    processes.wait_until_ready(worker)
    # Before the outage: a message queued for a worker that does not consume its queue (yet).
    # (Celery reads CELERY_BROKER_URL before its broker argument: the tests' own says memory://.)
    monkeypatch.setenv("CELERY_BROKER_URL", own_redis.url)
    Celery(broker=own_redis.url, set_as_current=False).send_task("modelhub.serving.tasks.reconcile_all", queue="parked")
    monkeypatch.undo()

    own_redis.stop()

    pages = {"/": "Overview", "/models/": model.name, f"/models/{model.name}/versions/1/": model.name,
             "/servers/": server.name}  # fmt: skip
    for page, shows in pages.items():
        shown = requests.get(web + page, cookies=cookies, timeout=60, allow_redirects=False)
        assert shown.status_code == 200 and shows in shown.text, page
    models = requests.get(f"{web}/api/v1/models/", headers=api, timeout=10)
    assert models.status_code == 200 and models.json()["results"][0]["name"] == model.name

    answer = requests.post(
        f"{web}/api/v1/models/{model.name}/versions/1/deploy/", json={"server": server.name}, headers=api, timeout=30
    )
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "task_queue_unavailable"
    assert f"Redis at 127.0.0.1:{own_redis.port}/0" in error["message"]
    assert "the deploy request is recorded" in error["message"]
    assert "periodic pass" in error["message"]
    assert answer.headers["Retry-After"]
    deployment = Deployment.objects.get(version=version, server=server)  # the write stands
    assert deployment.desired == DesiredState.LOADED and deployment.observed == ObservedState.PENDING

    # The UI's deploy says the same, as a warning on the page it returns to.
    session = requests.Session()
    session.cookies.update({**cookies, "csrftoken": "x" * 32})
    ui = session.post(
        f"{web}/models/{model.name}/versions/1/undeploy",
        data={"server": server.name, "csrfmiddlewaretoken": "x" * 32},
        timeout=30,
    )
    assert ui.status_code == 200 and "task queue" in ui.text and "is unreachable" in ui.text, ui.text[-2000:]
    deployment.refresh_from_db()
    assert deployment.desired == DesiredState.UNLOADED
    requests.post(
        f"{web}/api/v1/models/{model.name}/versions/1/deploy/", json={"server": server.name}, headers=api, timeout=30
    )

    own_redis.start()  # same port, same append-only file

    def loaded() -> bool:
        deployment.refresh_from_db()
        return deployment.observed == ObservedState.LOADED

    wait_for(loaded, 60, "the worker's scheduled reconcile to load what was recorded during the outage", every=0.3)
    # Compose runs Redis append-only too: a message queued before the outage is still there.
    assert redis.Redis.from_url(own_redis.url).llen("parked") == 1  # queued before the outage, still there
