"""GET /metrics: ModelHub's own figures for Prometheus, counted where they happen and
read at scrape time, added up across processes."""

from pathlib import Path

import psutil
import pytest
from django.db import transaction
from django.utils import timezone
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from modelhub.alerts.models import Alert, AlertRule, Severity, Signal
from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.monitoring.models import CheckKind, Status
from modelhub.monitoring.record import Result, record
from modelhub.registry.services import register_upload
from modelhub.serving.models import Deployment, DeploymentTransition, InferenceServer, ObservedState
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip


def sample(text: str, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def scrape(client, **headers) -> str:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return response.content.decode()


@pytest.mark.django_db
def test_requests_are_counted_by_view_name_and_status_never_by_path(client):
    before = scrape(client)
    for name in ("alpha-model", "beta-model", "gamma-model"):
        client.get(f"/api/v1/models/{name}/")
    client.get("/no/such/page-x")

    after = scrape(client)

    labels = {"view": "api:model-detail", "method": "GET", "status": "401"}
    assert (
        sample(after, "modelhub_http_requests_total", **labels)
        - (sample(before, "modelhub_http_requests_total", **labels) or 0)
        == 3
    )
    assert sample(after, "modelhub_http_requests_total", view="unmatched", method="GET", status="404") >= 1
    assert "alpha-model" not in after and "page-x" not in after
    assert sample(after, "modelhub_http_request_duration_seconds_count", view="api:model-detail") >= 3


def _deployment(tmp_path) -> Deployment:
    artifact = make_zip(tmp_path / "m.zip", {"1/model.py": doubler_source(2)})
    version = register_upload("metrics-model", artifact, dict(DOUBLER_MANIFEST), Actor(source=Source.CLI), create=True)
    server = InferenceServer.objects.create(name="metrics-srv", base_url="http://127.0.0.1:9")
    return Deployment.objects.create(version=version.version, server=server)


@pytest.mark.django_db(transaction=True)
def test_reconciler_actions_are_counted_once_committed(client, tmp_path):
    deployment = _deployment(tmp_path)
    before = scrape(client)

    with transaction.atomic():
        DeploymentTransition.objects.create(deployment=deployment, from_state="pending", to_state=ObservedState.LOADED)
    DeploymentTransition.objects.create(deployment=deployment, from_state="loaded", to_state=ObservedState.FAILED)
    with pytest.raises(RuntimeError), transaction.atomic():  # rolled back: it did not happen
        DeploymentTransition.objects.create(deployment=deployment, from_state="failed", to_state=ObservedState.LOADED)
        raise RuntimeError

    after = scrape(client)
    name = "modelhub_reconciler_actions_total"
    delta = {a: sample(after, name, action=a) - sample(before, name, action=a) for a in ("load", "unload", "failure")}
    assert delta == {"load": 1, "unload": 0, "failure": 1}


@pytest.mark.django_db
def test_checks_are_counted_by_kind_and_outcome(client):
    before = scrape(client)
    record([Result(kind=CheckKind.LATENCY, status=Status.FAIL), Result(kind=CheckKind.LATENCY, status=Status.FAIL)])
    record([Result(kind=CheckKind.SCHEMA, status=Status.OK)])

    after = scrape(client)

    def delta(kind, outcome):
        name = "modelhub_checks_total"
        return sample(after, name, kind=kind, outcome=outcome) - (sample(before, name, kind=kind, outcome=outcome) or 0)

    assert delta("latency", "fail") == 2 and delta("schema", "ok") == 1


@pytest.mark.django_db
def test_alerts_firing_are_read_from_the_database_at_scrape_time(client):
    rule = AlertRule.objects.create(name="hot", signal=Signal.POINT, series="cpu_util", threshold=0.9)
    warning = AlertRule.objects.create(
        name="warm", signal=Signal.POINT, series="cpu_util", threshold=0.5, severity=Severity.WARNING
    )
    before = scrape(client)
    now = timezone.now()
    Alert.objects.create(rule=rule, target="server:1", target_label="a", state="firing", since=now)
    Alert.objects.create(rule=rule, target="server:2", target_label="b", state="firing", since=now)
    Alert.objects.create(rule=warning, target="server:1", target_label="a", state="firing", since=now)
    Alert.objects.create(rule=warning, target="server:2", target_label="b", state="resolved", since=now)

    after = scrape(client)

    def delta(severity):
        return sample(after, "modelhub_alerts_firing", severity=severity) - sample(
            before, "modelhub_alerts_firing", severity=severity
        )

    assert (delta("critical"), delta("warning"), delta("info")) == (2, 1, 0)


@pytest.mark.django_db
def test_queue_depth_is_read_from_redis(client, settings):
    url = "redis://127.0.0.1:6379/5"
    settings.CELERY_BROKER_URL = url
    with Connection(url) as conn:
        for queue in ("checks", "reconcile", "notify"):
            conn.SimpleQueue(queue).clear()
        checks = conn.SimpleQueue("checks")
        for i in range(3):
            checks.put({"n": i})
        conn.SimpleQueue("reconcile").put({"n": 0}, priority=6)  # kept in its own list by kombu

        text = scrape(client)

        assert sample(text, "modelhub_queue_depth", queue="checks") == 3
        assert sample(text, "modelhub_queue_depth", queue="reconcile") == 1
        assert sample(text, "modelhub_queue_depth", queue="notify") == 0
        assert sample(text, "modelhub_broker_reachable") == 1
        for queue in ("checks", "reconcile"):
            conn.SimpleQueue(queue).clear()


@pytest.mark.django_db
def test_queue_depth_is_counted_in_the_filesystem_broker_folder(client, settings, tmp_path):
    folder = str(tmp_path)
    options = {"data_folder_in": folder, "data_folder_out": folder, "control_folder": folder}
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = options
    with Connection("filesystem://", transport="modelhub.filesystem_broker:Transport", transport_options=options) as c:
        for _ in range(2):
            c.SimpleQueue("accuracy").put({"x": 1})

    text = scrape(client)

    assert sample(text, "modelhub_queue_depth", queue="accuracy") == 2
    assert sample(text, "modelhub_queue_depth", queue="celery") == 0


@pytest.mark.django_db
def test_a_broker_that_does_not_answer_is_a_zero_not_a_failed_scrape(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"

    text = scrape(client)

    assert sample(text, "modelhub_broker_reachable") == 0
    assert sample(text, "modelhub_queue_depth", queue="checks") is None
    assert sample(text, "modelhub_alerts_firing", severity="critical") is not None


@pytest.mark.django_db
def test_with_a_token_set_metrics_ask_for_it(client, settings):
    settings.METRICS_TOKEN = "scrape-me-7f3a"

    refused = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})

    assert refused.status_code == wrong.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert "MODELHUB_METRICS_TOKEN" in refused.content.decode()
    assert "modelhub_" in scrape(client, Authorization="Bearer scrape-me-7f3a")


@pytest.mark.django_db
def test_several_gunicorn_workers_add_up_through_the_multiprocess_folder(web, tmp_path):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    # --preload: the metrics are made in the master before the fork, the case that needs care.
    server = web(workers=2, preload=True, PROMETHEUS_MULTIPROC_DIR=str(folder))
    labels = {"view": "ops:live", "method": "GET", "status": "200"}
    before = sample(server.get("/metrics").text, "modelhub_http_requests_total", **labels)

    for _ in range(20):
        assert server.get("/healthz/live").status_code == 200

    # Whichever worker answers a scrape, it reports every worker's count.
    totals = {sample(server.get("/metrics").text, "modelhub_http_requests_total", **labels) for _ in range(6)}
    assert totals == {before + 20}
    writers = {int(Path(p).stem.rsplit("_", 1)[-1]) for p in folder.glob("counter_*.db")}
    workers = {child.pid for child in psutil.Process(server.proc.pid).children()}
    assert len(workers) == 2 and workers <= writers  # each worker counted in its own file
