"""The issue's "done when", end to end: a real tritonserver breaks, the checks run as beat runs
them (the Celery task, eager here), the default alert rules judge the results, and the alert
and recovery emails are received by a real SMTP server (aiosmtpd on a loopback port).

Nothing between the check and the inbox is faked or called by hand: a pass records its
results, the alerts app evaluates them on `results_recorded`, a flip queues
`send_notifications` on commit, and Django's SMTP backend delivers the mail.
"""

import json
import time
from email.message import EmailMessage

import pytest
import tritonclient.http as triton_http
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from modelhub import celery_app
from modelhub.alerts.models import Alert, AlertState
from modelhub.monitoring.accuracy_tasks import accuracy_pass, run_accuracy
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.monitoring.schedules import default_schedules
from modelhub.monitoring.tasks import health_pass, model_checks_pass
from modelhub.registry.evaluation import attach_evaluation_set
from modelhub.serving.models import Deployment, InferenceServer, ObservedState
from modelhub.serving.services import request_deploy
from modelhub.serving.tasks import reconcile_server_task

# ruff: noqa: F811 (pytest fixtures imported by name)
from tests.alerts.conftest import rules, smtp  # noqa: F401
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip
from tests.serving.test_deploy import infer, register, register_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]

OWNER_EMAIL = "oncall@example.com"

# One INT64 label per FP32 input row, batched: the good version answers the row's parity,
# the broken one (a bad export) answers 0 whatever it is asked.
LABELLER_MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            labels = {labels}
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("LABEL", labels.astype(np.int64))]))
        return responses
"""
PARITY = "x.astype(np.int64) % 2"
CONSTANT = "np.zeros(x.shape, np.int64)"
LABELLER_MANIFEST = {
    "backend": "python",
    "max_batch_size": 8,
    "inputs": [{"name": "X", "datatype": "FP32", "dims": [1]}],
    "outputs": [{"name": "LABEL", "datatype": "INT64", "dims": [1]}],
    "provenance": {"git_commit": "feedbeef", "ci_run_url": "https://ci.example.com/runs/7"},
}


@pytest.fixture
def owner(db) -> User:
    return User.objects.create_user("e2e-owner", email=OWNER_EMAIL)


def deploy(version, server: InferenceServer, actor) -> Deployment:
    [deployment] = request_deploy(version, [server], actor)  # eager Celery: reconciled on commit
    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    return deployment


def watched_doubler(triton, actor, owner, tmp_path, server_name: str, model_name: str) -> Deployment:
    """A server with a loaded doubler whose model has an owner with an email address and a
    latency SLO (so the default latency rule judges it too; generous for a busy test machine)."""
    server = register_server(triton, server_name)
    artifact = make_zip(tmp_path / f"{model_name}.zip", {"1/model.py": doubler_source(2)})
    version = register(actor, artifact, DOUBLER_MANIFEST, model_name)
    version.model.owners.add(owner)
    version.model.latency_slo_ms = 1000.0
    version.model.save(update_fields=["latency_slo_ms"])
    return deploy(version, server, actor)


def beat_round() -> None:
    """Every periodic task beat runs, once, in the schedule's order: each sent by its name, as beat
    sends it, to the task a worker would have registered (eager Celery runs it here)."""
    celery_app.loader.import_default_modules()  # what a worker imports at start (CELERY_IMPORTS, tasks.py)
    for schedule in default_schedules():
        celery_app.tasks[schedule.task].delay().get()


def text(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def html(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("html",)).get_content()


def stamp(moment) -> str:
    """A time as the emails print it."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")


def latest(kind: str, **filters) -> CheckResult:
    return CheckResult.objects.filter(kind=kind, **filters).order_by("-created_at", "-id").first()


def test_a_killed_triton_gives_one_alert_email_and_its_restart_one_recovery_email(
    triton_factory, actor, owner, rules, smtp, tmp_path
):
    own = triton_factory()
    deployment = watched_doubler(own, actor, owner, tmp_path, "e2e-crashy", "e2e-phoenix")
    server = deployment.server
    beat_round()
    assert latest(CheckKind.SERVER_HEALTH, server=server).status == Status.OK
    assert smtp.messages == []  # a healthy server and model: nothing to tell

    own.kill()
    killed = time.monotonic()
    report = health_pass.delay().get()  # the next pass, as beat sends it

    assert report["servers_down"] == ["e2e-crashy"]
    down = latest(CheckKind.SERVER_HEALTH, server=server)
    assert down.status == Status.FAIL and down.value == 0.0
    assert "e2e-crashy" in down.message and "refused" in down.message.lower(), down.message
    server.refresh_from_db()
    assert server.live is False and server.ready is False
    # Within one health interval of the kill, the mail is in the SMTP server's inbox.
    [alert_mail] = smtp.messages
    assert time.monotonic() - killed < settings.MONITORING_HEALTH_INTERVAL_S
    assert alert_mail["To"] == OWNER_EMAIL
    assert alert_mail["Subject"] == "[ModelHub] FIRING critical: Server down - e2e-crashy"
    link = f"{settings.MODELHUB_BASE_URL}/servers/e2e-crashy/"
    for body in (text(alert_mail), html(alert_mail)):
        assert "e2e-crashy" in body
        assert stamp(down.created_at) in body  # since when
        assert down.message in body or down.message.replace("'", "&#x27;") in body  # Triton's (the client's) error
        assert link in body  # absolute
    assert "Since:   " in text(alert_mail)

    # Every pass beat runs while it is down (health, readiness, latency, stats, metrics,
    # reconcile, accuracy, sending), twice: still the one mail.
    beat_round()
    beat_round()
    assert len(smtp.messages) == 1, [m["Subject"] for m in smtp.messages]
    assert Alert.objects.get(rule__signal="server_down").state == AlertState.FIRING

    own.restart()
    reconcile_server_task.delay(server.pk).get()  # what beat's reconcile-all does for this server
    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    assert infer(own, "e2e-phoenix", 1, [2.5]) == [5.0]  # the model is back
    health_pass.delay().get()

    assert latest(CheckKind.SERVER_HEALTH, server=server).status == Status.OK
    assert len(smtp.messages) == 2, [m["Subject"] for m in smtp.messages]
    recovery = smtp.messages[1]
    assert recovery["To"] == OWNER_EMAIL
    assert recovery["Subject"] == "[ModelHub] RESOLVED: Server down - e2e-crashy"
    assert f"Firing since {stamp(down.created_at)}" in text(recovery)
    assert link in text(recovery) and link in html(recovery)

    beat_round()  # healthy again: nothing more to tell
    assert len(smtp.messages) == 2, [m["Subject"] for m in smtp.messages]
    assert Alert.objects.get(rule__signal="server_down").state == AlertState.RESOLVED


def test_a_model_unloaded_behind_modelhubs_back_gives_one_not_ready_email_with_tritons_reason(
    triton, actor, owner, rules, smtp, tmp_path
):
    deployment = watched_doubler(triton, actor, owner, tmp_path, "e2e-behind", "e2e-unloaded-behind")
    model_checks_pass.delay().get()
    assert latest(CheckKind.MODEL_READY, deployment=deployment).status == Status.OK
    assert smtp.messages == []

    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    try:
        client.unload_model("e2e-unloaded-behind__v1")  # version 1's own Triton name
    finally:
        client.close()
    model_checks_pass.delay().get()
    model_checks_pass.delay().get()  # a second pass: the alert is firing already

    result = latest(CheckKind.MODEL_READY, deployment=deployment)
    assert result.status == Status.FAIL and result.value == 0.0
    assert "version 1 of 'e2e-unloaded-behind__v1' is not ready on Triton server 'e2e-behind'" in result.message
    assert "is not at ready state" in result.message, result.message  # Triton's own words
    [mail] = smtp.messages
    assert mail["To"] == OWNER_EMAIL
    assert mail["Subject"] == "[ModelHub] FIRING critical: Model not ready - e2e-unloaded-behind v1 on e2e-behind"
    body = text(mail)
    assert result.message in body
    assert f"{settings.MODELHUB_BASE_URL}/deployments/{deployment.pk}/" in body
    assert stamp(Alert.objects.get(rule__signal="model_not_ready").bad_since) in body

    # The reconciler puts it back; the next pass says so, once.
    reconcile_server_task.delay(deployment.server_id).get()
    model_checks_pass.delay().get()
    assert latest(CheckKind.MODEL_READY, deployment=deployment).status == Status.OK
    assert [m["Subject"] for m in smtp.messages][1:] == [
        "[ModelHub] RESOLVED: Model not ready - e2e-unloaded-behind v1 on e2e-behind"
    ]


def test_a_broken_version_falls_below_its_accuracy_threshold_and_alerts_once(
    triton, actor, owner, rules, smtp, tmp_path
):
    server = register_server(triton, "e2e-accuracy")
    good = register(
        actor,
        make_zip(tmp_path / "good.zip", {"1/model.py": LABELLER_MODEL_PY.format(labels=PARITY)}),
        LABELLER_MANIFEST,
        "e2e-parity",
    )
    broken = register(
        actor,
        make_zip(tmp_path / "broken.zip", {"1/model.py": LABELLER_MODEL_PY.format(labels=CONSTANT)}),
        LABELLER_MANIFEST,
        "e2e-parity",
    )
    good.model.owners.add(owner)
    rows = [{"inputs": {"X": [float(i)]}, "expected": i % 2} for i in range(40)]
    path = tmp_path / "parity.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    attach_evaluation_set(good.model, path, actor, output="LABEL", threshold=0.9)
    good_deployment, broken_deployment = deploy(good, server, actor), deploy(broken, server, actor)

    measured = accuracy_pass.delay().get()  # as beat runs it: each loaded version due once

    assert sorted(measured) == sorted([good_deployment.pk, broken_deployment.pk])
    ok = latest(CheckKind.ACCURACY, version=good)
    assert (ok.status, ok.value) == (Status.OK, 1.0), ok.message
    failed = latest(CheckKind.ACCURACY, version=broken)
    assert (failed.status, failed.value) == (Status.FAIL, 0.5), failed.message
    assert failed.message == "Accuracy 0.5 on 40 rows is below the threshold 0.9"
    assert failed.details["requests"] == 5 and failed.details["largest_request_rows"] == 8  # batches of max_batch_size
    [mail] = smtp.messages
    assert mail["To"] == OWNER_EMAIL
    assert mail["Subject"] == "[ModelHub] FIRING warning: Accuracy below threshold - e2e-parity v2"
    body = text(mail)
    assert failed.message in body and "Last value: 0.5" in body
    assert f"{settings.MODELHUB_BASE_URL}/models/e2e-parity/versions/2/" in body

    # Measured again (the next scheduled pass finds nothing due; a "run now" measures it anyway): still one mail.
    assert accuracy_pass.delay().get() == []
    run_accuracy.delay(broken_deployment.pk).get()
    assert CheckResult.objects.filter(kind=CheckKind.ACCURACY, version=broken).count() == 2
    assert len(smtp.messages) == 1, [m["Subject"] for m in smtp.messages]
