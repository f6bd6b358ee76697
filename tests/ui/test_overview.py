"""The overview (what is broken, since when, what changed) and /healthz, the two pages anyone reaches first."""

import logging
import re
import socket
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from modelhub.alerts.models import Alert, AlertRule, AlertState, Severity, Signal
from modelhub.audit.log import record
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.registry.models import Alias
from modelhub.registry.services import move_alias, register_upload
from modelhub.serving.models import Deployment, DeploymentTransition, InferenceServer, ObservedState
from modelhub.ui.views import overview as overview_view
from tests.conftest import doubler_source, make_zip

# --- /healthz --------------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_answers_ok_while_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_says_only_database_unavailable_and_logs_the_rest(client, django_db_blocker, monkeypatch, caplog):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    with django_db_blocker.unblock():
        connection.close()
        monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
        monkeypatch.setitem(connection.settings_dict, "PORT", str(dead_port))
        try:
            with caplog.at_level(logging.ERROR, logger="modelhub.ui.views"):
                response = client.get("/healthz")
        finally:
            connection.close()
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "database unavailable"}
    # The caller learns nothing of the database; the log has what the operator needs.
    assert str(dead_port) not in response.content.decode()
    assert str(dead_port) in caplog.text


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def version_of(db, tmp_path, actor, manifest):
    """version_of("digits") -> a fresh version of that model (created when missing)."""

    def make(name: str, factor: int = 2):
        artifact = make_zip(tmp_path / f"{name}-{factor}.zip", {"1/model.py": doubler_source(factor)})
        return register_upload(name, artifact, manifest, actor, create=True).version

    return make


@pytest.fixture
def populate(version_of):
    """populate(n): n servers and n models, each model with one version deployed to one server;
    the last deployment failed."""

    def make(n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            server = InferenceServer.objects.create(name=f"server-{i:03}", base_url="http://127.0.0.1:9")
            version = version_of(f"model-{i:03}", i + 2)
            Alias.objects.create(model=version.model, name="production", version=version)
            observed = ObservedState.FAILED if i == start + n - 1 else ObservedState.LOADED
            Deployment.objects.create(version=version, server=server, observed=observed)

    return make


def section(page: str, testid: str) -> str:
    match = re.search(rf'<section data-testid="{testid}">(.*?)</section>', page, re.S)
    assert match, f"no section {testid}"
    return match.group(1)


def overview(client) -> tuple[str, int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/")
    assert response.status_code == 200
    return response.content.decode(), len(queries)


# --- who may see it --------------------------------------------------------------------


def test_anonymous_is_sent_to_the_login_page(client, db):
    response = client.get("/")
    assert response.status_code == 302
    assert response.url.startswith(reverse("ui:login"))


def test_a_person_with_no_role_is_refused_with_the_role_needed(client_as):
    response = client_as(None).get("/")
    assert response.status_code == 403
    assert "viewer=read" in response.content.decode()


# --- what it shows ---------------------------------------------------------------------


def test_a_fresh_install_says_what_to_do_next(client_as):
    page, _ = overview(client_as("viewer"))
    assert "No servers yet: an admin registers one" in section(page, "overview-servers")
    assert "No models yet: CI uploads with" in page
    assert "Nothing firing." in section(page, "overview-alerts")
    assert "No deploys or alias moves yet." in section(page, "recent-changes")


def test_cards_count_servers_deployments_and_alerts_and_link_on(client_as, populate):
    populate(3)  # three servers, one failed deployment
    InferenceServer.objects.filter(name="server-000").update(live=True)
    InferenceServer.objects.filter(name="server-001").update(live=False)
    rule = AlertRule.objects.create(name="Server down", signal=Signal.SERVER_DOWN, severity=Severity.CRITICAL)
    for target in ("server:1", "server:2"):
        Alert.objects.create(
            rule=rule, target=target, target_label=target, state=AlertState.FIRING, since=timezone.now()
        )
    page, _ = overview(client_as("viewer"))
    cards = page[page.index('<div class="cards">') : page.index('<section data-testid="overview-alerts">')]
    assert "1 up" in cards and "1 down" in cards and "1 not checked yet" in cards
    assert ">1 failed<" in cards and ">2 loaded<" in cards
    assert ">2 critical<" in cards and ">0 warning<" in cards
    assert f'href="{reverse("ui:server-list")}"' in cards
    assert f'href="{reverse("ui:model-list")}?state=failed"' in cards
    assert f'href="{reverse("ui:alert-list")}"' in cards


def test_firing_alerts_link_to_their_page_with_since_and_message(client_as):
    rule = AlertRule.objects.create(name="Model not ready", signal=Signal.MODEL_NOT_READY)
    alert = Alert.objects.create(
        rule=rule,
        target="deployment:9",
        target_label="digits v3 on gpu-1",
        state=AlertState.FIRING,
        since=timezone.now() - timedelta(hours=2),
        last_message="model 'digits' is not ready: UNAVAILABLE",
    )
    Alert.objects.create(
        rule=rule, target="deployment:10", target_label="quiet", state=AlertState.RESOLVED, since=timezone.now()
    )
    alerts = section(overview(client_as("viewer"))[0], "overview-alerts")
    assert f'href="{reverse("ui:alert-detail", args=[alert.pk])}"' in alerts
    assert "digits v3 on gpu-1" in alerts and "is not ready: UNAVAILABLE" in alerts
    assert "2\xa0hours ago" in alerts
    assert "quiet" not in alerts  # resolved: not firing


def test_failed_deployments_come_first_with_tritons_error_and_links(client_as, populate):
    populate(3)
    failed = Deployment.objects.get(observed=ObservedState.FAILED)
    Deployment.objects.filter(pk=failed.pk).update(last_error="failed to load 'model-002': bad config")
    deployments = section(overview(client_as("viewer"))[0], "overview-deployments")
    assert deployments.index("model-002") < deployments.index("model-000")  # failed first, though last by name
    assert "failed to load &#x27;model-002&#x27;: bad config" in deployments
    assert f'href="{reverse("ui:deployment-detail", args=[failed.pk])}"' in deployments
    assert f'href="{reverse("ui:server-detail", args=["server-002"])}"' in deployments


def test_recent_changes_show_deploys_transitions_and_alias_moves_newest_first(client_as, version_of, actor):
    v1, v2 = version_of("digits", 2), version_of("digits", 3)
    server = InferenceServer.objects.create(name="gpu-1", base_url="http://127.0.0.1:9")
    deployment = Deployment.objects.create(version=v2, server=server)
    record(actor, "deployment.deploy", deployment)
    DeploymentTransition.objects.create(
        deployment=deployment, from_state=ObservedState.PENDING, to_state=ObservedState.FAILED, error="UNAVAILABLE: bad"
    )
    move_alias(v1.model, "production", v1, actor)
    move_alias(v1.model, "production", v2, actor)
    changes = section(overview(client_as("viewer"))[0], "recent-changes")
    rows = re.findall(r"<tr>(.*?)</tr>", changes, re.S)[1:]
    assert len(rows) == 4
    assert "alias moved" in rows[0] and "v1 → v2" in rows[0] and "cli" in rows[0]
    assert "none → v1" in rows[1]
    assert "observed" in rows[2] and "pending → failed" in rows[2] and "UNAVAILABLE: bad" in rows[2]
    assert "deploy requested" in rows[3] and "digits v2 on gpu-1" in rows[3]
    assert f'href="{reverse("ui:deployment-detail", args=[deployment.pk])}"' in rows[3]
    assert f'href="{reverse("ui:model-detail", args=["digits"])}"' in rows[0]


def test_recent_changes_are_bounded(client_as, version_of, actor, monkeypatch):
    monkeypatch.setattr(overview_view, "RECENT_CHANGES", 3)
    versions = [version_of("digits", f) for f in (2, 3, 4, 5)]
    for version in versions:
        move_alias(version.model, "production", version, actor)
    changes = section(overview(client_as("viewer"))[0], "recent-changes")
    assert changes.count("alias moved") == 3
    assert "v3 → v4" in changes and "none → v1" not in changes


# --- bounded rows, constant queries ----------------------------------------------------


def test_the_overview_shows_a_bounded_number_of_rows_and_says_how_many_more(client_as, populate, monkeypatch):
    monkeypatch.setattr(overview_view, "OVERVIEW_ROWS", 3)
    populate(5)
    page, _ = overview(client_as("viewer"))
    assert "server-002" in section(page, "overview-servers") and "server-003" not in section(page, "overview-servers")
    assert "and 2 more servers" in page and f'href="{reverse("ui:server-list")}">all servers' in page
    assert "and 2 more models" in page and f'href="{reverse("ui:model-list")}">all models' in page
    assert "and 2 more deployments" in page
    # The failed deployment is the last by name, yet shown: failures come first.
    assert "model-004" in section(page, "overview-deployments") and 'data-state="failed"' in section(
        page, "overview-deployments"
    )
    assert "production→v1" in page


def test_the_overview_costs_the_same_queries_for_any_number_of_rows(
    client_as, populate, actor, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(overview_view, "OVERVIEW_ROWS", 3)
    client = client_as("viewer")
    populate(2)
    _, few = overview(client)
    populate(8, start=2)
    rule = AlertRule.objects.create(name="Server down", signal=Signal.SERVER_DOWN)
    for server in InferenceServer.objects.all():
        Alert.objects.create(
            rule=rule,
            target=f"server:{server.pk}",
            target_label=server.name,
            state=AlertState.FIRING,
            since=timezone.now(),
        )
    for deployment in Deployment.objects.all():
        record(actor, "deployment.deploy", deployment)
        DeploymentTransition.objects.create(deployment=deployment, from_state="pending", to_state="loaded")
    page, many = overview(client)
    assert "and 7 more models" in page and "and 7 more firing alerts" in page
    assert many <= few + 4  # one COUNT per section that has more rows than it shows
    with django_assert_max_num_queries(few + 4):
        client.get("/")


# --- each deployment's latest checks ---------------------------------------------------


@pytest.fixture
def deploy(version_of):
    server = InferenceServer.objects.create(name="gpu-1", base_url="http://127.0.0.1:9")

    def make(name: str) -> Deployment:
        return Deployment.objects.create(version=version_of(name, len(name) + 2), server=server)

    return make


def result(deployment: Deployment, kind: str, status: str, age_s: int = 0, **fields) -> CheckResult:
    return CheckResult.objects.create(
        kind=kind,
        status=status,
        deployment=deployment,
        server=deployment.server,
        version=deployment.version,
        created_at=timezone.now() - timedelta(seconds=age_s),
        **fields,
    )


def row_of(page: str, model: str) -> str:
    deployments = section(page, "overview-deployments")
    return next(row for row in re.split(r"<tr>", deployments) if f">{model}</a></td>" in row)


def test_each_deployment_shows_its_latest_result_of_each_check(client_as, deploy):
    digits, faces = deploy("digits"), deploy("faces")
    deploy("quiet")
    result(digits, CheckKind.MODEL_READY, Status.OK, age_s=120)
    result(digits, CheckKind.MODEL_READY, Status.FAIL, message="model 'digits' is not ready: UNAVAILABLE")
    result(digits, CheckKind.LATENCY, Status.OK, value=12.25)
    result(faces, CheckKind.SCHEMA, Status.FAIL, message="output OUTPUT: dims [-1] served as [2]")
    result(faces, CheckKind.SCHEMA, Status.OK, age_s=600)
    page, _ = overview(client_as("viewer"))
    row = row_of(page, "digits")
    assert "model readiness fail" in row and "model readiness ok" not in row
    assert "latency probe ok (12.25)" in row
    assert "is not ready: UNAVAILABLE" in row  # Triton's reason, on hover
    assert row.index("model readiness") < row.index("latency probe")  # a fixed order of checks
    faces_row = row_of(page, "faces")
    assert "schema conformance fail" in faces_row and "dims [-1] served as [2]" in faces_row
    assert "none yet" in row_of(page, "quiet")


def test_the_last_checks_cost_the_same_queries_for_any_number_of_deployments(client_as, deploy):
    client = client_as("viewer")
    for name in ("a1", "a2"):
        d = deploy(name)
        result(d, CheckKind.MODEL_READY, Status.OK)
        result(d, CheckKind.LATENCY, Status.OK, value=1.0)
    _, few = overview(client)
    for name in ("b1", "b2", "b3", "b4", "b5"):
        d = deploy(name)
        for kind in (CheckKind.MODEL_READY, CheckKind.SCHEMA, CheckKind.LATENCY, CheckKind.STATS):
            result(d, kind, Status.OK, value=2.0)
            result(d, kind, Status.WARN, age_s=60)
    page, many = overview(client)
    assert page.count("model readiness ok") == 7
    assert many == few
