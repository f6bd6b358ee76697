"""Passes: recorded once per pass id (a retried task, a second worker), never two of a kind at once."""

import threading

import pytest
from django.db import connection

from modelhub.monitoring import tasks
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.monitoring.passes import run_pass, slot_pass_id
from modelhub.serving.locks import named_lock
from modelhub.serving.models import Deployment, InferenceServer
from tests.monitoring.test_checks import deploy
from tests.serving.test_deploy import register, register_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.triton
def test_a_pass_run_twice_with_one_id_records_once(triton, actor, doubler_zip, manifest):
    server = register_server(triton, "twice")
    deployment = deploy(actor, doubler_zip(2, "twice.zip"), manifest, "twice-model", server)

    first = tasks.model_checks_pass.apply(task_id="retried-task").get()
    again = tasks.model_checks_pass.apply(task_id="retried-task").get()  # a retry, or a redelivery to another worker

    assert (first["written"], again["written"]) == (2, 0)
    assert first["pass_id"] == "model_checks:retried-task"
    kinds = sorted(CheckResult.objects.filter(deployment=deployment).values_list("kind", flat=True))
    assert kinds == [CheckKind.MODEL_READY, CheckKind.SCHEMA]
    # Another task (the next scheduled slot) records again.
    assert tasks.model_checks_pass.apply(task_id="next-slot").get()["written"] == 2


@pytest.mark.triton
def test_run_now_checks_one_deployment_readiness_schema_and_latency(triton, actor, doubler_zip, manifest):
    server = register_server(triton, "run-now")
    deployment = deploy(actor, doubler_zip(2, "now.zip"), manifest, "run-now-model", server)
    other = Deployment.objects.create(
        version=register(actor, doubler_zip(3, "other.zip"), manifest, "run-now-other"), server=server
    )

    tasks.run_checks_for_deployment.apply(args=[deployment.pk]).get()

    rows = CheckResult.objects.filter(deployment=deployment)
    assert sorted(rows.values_list("kind", "status")) == [
        (CheckKind.LATENCY, Status.OK),
        (CheckKind.MODEL_READY, Status.OK),
        (CheckKind.SCHEMA, Status.OK),
    ]
    assert not CheckResult.objects.filter(deployment=other).exists()


def test_passes_of_one_kind_never_overlap():
    server = InferenceServer.objects.create(name="overlap", base_url="http://127.0.0.1:1")
    holding, release = threading.Event(), threading.Event()

    def other_worker():
        try:
            with named_lock("monitoring.pass:health") as acquired:
                assert acquired
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    worker = threading.Thread(target=other_worker)
    worker.start()
    try:
        assert holding.wait(10)
        report = run_pass("health", "health:overlap")
        other_kind = run_pass("metrics", "metrics:overlap")  # another kind is not held back
    finally:
        release.set()
        worker.join()

    assert report.skipped and report.written == 0
    assert not CheckResult.objects.filter(kind=CheckKind.SERVER_HEALTH).exists()
    assert not other_kind.skipped
    [metrics] = CheckResult.objects.filter(kind=CheckKind.METRICS, server=server)
    assert metrics.status == Status.FAIL and metrics.message.startswith("server down:")
    assert run_pass("health", "health:after").written == 1  # free again


def test_slot_pass_ids_follow_the_interval(settings):
    from datetime import UTC, datetime

    settings.MONITORING_HEALTH_INTERVAL_S = 30
    at = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    assert slot_pass_id("health", at) == slot_pass_id("health", at.replace(second=29))
    assert slot_pass_id("health", at) != slot_pass_id("health", at.replace(second=31))
