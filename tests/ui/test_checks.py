"""The checks pages: history (filters, keyset pages), one result, run now, and beat's schedules."""

import re
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from modelhub.audit.models import AuditEvent
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.registry.services import register_upload
from modelhub.serving.models import Deployment, DesiredState, InferenceServer
from tests.conftest import doubler_source, make_zip

pytestmark = pytest.mark.django_db

LIST = "/checks/"
RUN_NOW = "/checks/run-now"
SCHEDULES = "/checks/schedules/"
DEAD_URL = "http://127.0.0.1:9"  # nothing listens: connection refused at once


@pytest.fixture
def dead_server(db):
    return InferenceServer.objects.create(name="chk-dead", base_url=DEAD_URL)


@pytest.fixture
def deploy(tmp_path, actor, manifest, dead_server):
    def make(name: str, server: InferenceServer = dead_server, **fields) -> Deployment:
        artifact = make_zip(tmp_path / f"{name}.zip", {"1/model.py": doubler_source()})
        version = register_upload(name, artifact, manifest, actor, create=True).version
        return Deployment.objects.create(version=version, server=server, **fields)

    return make


def result(kind=CheckKind.SERVER_HEALTH, status=Status.OK, *, age_s: float = 0, at=None, **fields) -> CheckResult:
    return CheckResult.objects.create(
        kind=kind, status=status, created_at=at or timezone.now() - timedelta(seconds=age_s), **fields
    )


def deployment_result(deployment: Deployment, kind=CheckKind.MODEL_READY, status=Status.OK, **fields):
    return result(kind, status, deployment=deployment, server=deployment.server, version=deployment.version, **fields)


def row_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-testid="check-row" data-id="(\d+)"', page)]


def link(page: str, testid: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)"[^>]*data-testid="{testid}"', page)
    return unescape(found.group(1)) if found else None


def text_of(response) -> str:
    return response.content.decode()


def flashed(response) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


# --- pages: who may see them ------------------------------------------------------------


@pytest.mark.parametrize("url", [LIST, SCHEDULES])
def test_pages_send_the_anonymous_to_sign_in_and_refuse_a_person_without_a_role(client_as, url):
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")

    refused = client_as(None).get(url)
    assert refused.status_code == 403 and "&#x27;read&#x27;" in text_of(refused)


def test_detail_sends_the_anonymous_to_sign_in_and_refuses_no_role(client_as, dead_server):
    row = result(server=dead_server)
    assert Client().get(f"/checks/{row.pk}/").status_code == 302
    assert client_as(None).get(f"/checks/{row.pk}/").status_code == 403


# --- history ----------------------------------------------------------------------------


def test_history_lists_newest_first_with_status_target_link_value_and_tritons_message(client_as, deploy, dead_server):
    digits = deploy("digits")
    health = result(status=Status.FAIL, server=dead_server, age_s=60, message="server 'chk-dead' is down: refused")
    ready = deployment_result(digits, status=Status.FAIL, value=3.5, message="model 'digits' is not ready: UNAVAILABLE")

    page = text_of(client_as("viewer").get(LIST))

    assert row_ids(page) == [ready.pk, health.pk]
    assert f'href="/deployments/{digits.pk}/"' in page and 'href="/servers/chk-dead/"' in page
    assert "model &#x27;digits&#x27; is not ready: UNAVAILABLE" in page and "3.5" in page
    assert 'data-state="fail"' in page and f'href="/checks/{ready.pk}/"' in page


def test_a_version_result_links_to_the_version_page(client_as, deploy):
    version = deploy("faces").version
    result(CheckKind.ACCURACY, Status.WARN, version=version, value=0.91)

    page = text_of(client_as("viewer").get(LIST))

    assert f'href="/models/faces/versions/{version.number}/"' in page


def test_history_filters_by_kind_status_server_model_deployment_and_time(client_as, deploy, dead_server):
    other = InferenceServer.objects.create(name="chk-other", base_url=DEAD_URL)
    digits, faces = deploy("digits"), deploy("faces", server=other)
    old_health = result(server=dead_server, age_s=7200)
    failing_health = result(status=Status.FAIL, server=other, age_s=10)
    digits_ready = deployment_result(digits, age_s=5)
    faces_latency = deployment_result(faces, CheckKind.LATENCY, Status.WARN, age_s=1)
    viewer = client_as("viewer")

    def listed(**params) -> list[int]:
        response = viewer.get(LIST, params)
        assert response.status_code == 200, text_of(response)
        return row_ids(text_of(response))

    assert listed(kind="server_health") == [failing_health.pk, old_health.pk]
    assert listed(status="fail") == [failing_health.pk]
    assert listed(server="chk-other") == [faces_latency.pk, failing_health.pk]
    assert listed(model="digits") == [digits_ready.pk]
    assert listed(deployment=faces.pk) == [faces_latency.pk]
    an_hour_ago = (timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert listed(since=an_hour_ago) == [faces_latency.pk, digits_ready.pk, failing_health.pk]
    assert listed(until=an_hour_ago) == [old_health.pk]
    assert listed(kind="latency", server="chk-dead") == []


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"kind": "nonsense"}, "kind: Select a valid choice. nonsense is not one of the available choices."),
        ({"deployment": "twelve"}, "deployment: Enter a whole number."),
        ({"deployment": "0"}, "deployment: Ensure this value is greater than or equal to 1."),
        ({"since": "yesterday"}, "since: Enter a valid date/time."),
        ({"since": "2026-01-02T00:00", "until": "2026-01-01T00:00"}, "until: must be after since"),
        ({"before": "not-a-cursor"}, "&#x27;not-a-cursor&#x27; is not a page of this list: open the first page"),
        ({"before": "2026-01-01T00:00:00+00:00_1", "after": "2026-01-01T00:00:00+00:00_2"}, "give before or after"),
    ],
)
def test_a_bad_filter_or_cursor_is_said_on_the_page_not_a_500(client_as, dead_server, params, said):
    result(server=dead_server)

    response = client_as("viewer").get(LIST, params)

    assert response.status_code == 400
    page = text_of(response)
    assert said in page and 'data-testid="filter-errors"' in page
    assert row_ids(page) == []


def test_keyset_pages_neither_repeat_nor_skip_rows_with_equal_times(client_as, dead_server):
    # 120 rows on 3 timestamps: a page boundary falls inside a run of equal times.
    moments = [timezone.now() - timedelta(minutes=m) for m in (1, 2, 3)]
    CheckResult.objects.bulk_create(
        CheckResult(kind=CheckKind.SERVER_HEALTH, status=Status.OK, server=dead_server, created_at=moments[i % 3])
        for i in range(120)
    )
    expected = list(CheckResult.objects.order_by("-created_at", "-id").values_list("id", flat=True))
    viewer = client_as("viewer")

    pages, url = [], LIST
    while url:
        page = text_of(viewer.get(url if url.startswith("/") else LIST + url))
        pages.append((row_ids(page), page))
        url = link(page, "older")
    assert [len(ids) for ids, _ in pages] == [50, 50, 20]
    assert [i for ids, _ in pages for i in ids] == expected
    assert link(pages[0][1], "newer") is None

    # And back: "newer" from the last page gives the middle page again, then the first.
    middle = text_of(viewer.get(LIST + link(pages[2][1], "newer")))
    assert row_ids(middle) == pages[1][0]
    first = text_of(viewer.get(LIST + link(middle, "newer")))
    assert row_ids(first) == pages[0][0] and link(first, "newer") is None


def test_keyset_links_keep_the_filters(client_as, dead_server):
    other = InferenceServer.objects.create(name="chk-other", base_url=DEAD_URL)
    CheckResult.objects.bulk_create(
        CheckResult(kind=CheckKind.SERVER_HEALTH, status=Status.OK, server=s, created_at=timezone.now())
        for s in [dead_server, other] * 60
    )

    older = link(text_of(client_as("viewer").get(LIST, {"server": "chk-other"})), "older")
    second = text_of(client_as("viewer").get(LIST + older))

    assert "server=chk-other" in older
    assert len(row_ids(second)) == 10
    assert set(CheckResult.objects.filter(pk__in=row_ids(second)).values_list("server__name", flat=True)) == {
        "chk-other"
    }


def test_history_costs_the_same_queries_for_5_rows_or_50(client_as, deploy, dead_server):
    viewer, operator = client_as("viewer"), client_as("operator")
    digits = deploy("digits")

    def queries(client) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(LIST).status_code == 200
        return len(captured)

    for _ in range(5):
        deployment_result(digits)
    few = queries(viewer), queries(operator)
    for _ in range(45):
        deployment_result(digits)
        result(server=dead_server)
        result(CheckKind.ACCURACY, version=digits.version)
    many = queries(viewer), queries(operator)

    assert few == many and max(many) <= 30


def test_an_empty_history_says_where_results_come_from(client_as):
    page = text_of(client_as("operator").get(LIST))

    assert "No check results" in page and "/checks/schedules/" in page and "run a server" in page


# --- detail -----------------------------------------------------------------------------


def test_detail_shows_the_details_pretty_printed_the_pass_and_links(client_as, deploy):
    digits = deploy("digits")
    row = deployment_result(
        digits,
        CheckKind.LATENCY,
        Status.WARN,
        value=41.5,
        message="p95 41.5 ms over the SLO of 40 ms",
        details={"p95_ms": 41.5, "p50_ms": 12.0},
        dedupe_key=f"now:abc123:latency:latency:s{digits.server_id}d{digits.pk}v{digits.version_id}",
    )

    response = client_as("viewer").get(f"/checks/{row.pk}/")

    page = text_of(response)
    assert response.status_code == 200
    assert "{\n  &quot;p50_ms&quot;: 12.0,\n  &quot;p95_ms&quot;: 41.5\n}" in page
    assert '<dd class="mono" data-testid="pass-id">now:abc123:latency</dd>' in page
    assert f'href="/deployments/{digits.pk}/"' in page and 'href="/models/digits/versions/1/"' in page
    assert f"/checks/?kind=latency&amp;deployment={digits.pk}" in page
    assert "p95 41.5 ms over the SLO of 40 ms" in page


def test_detail_of_a_missing_result_is_404(client_as):
    assert client_as("viewer").get("/checks/999999/").status_code == 404


# --- run now ----------------------------------------------------------------------------


def test_the_viewer_sees_no_run_now_form_and_a_forged_post_changes_nothing(client_as, dead_server):
    viewer = client_as("viewer")
    assert 'data-testid="run-now"' not in text_of(viewer.get(LIST))

    response = viewer.post(RUN_NOW, {"server": "chk-dead"})

    assert response.status_code == 403 and "&#x27;deploy&#x27;" in text_of(response)
    assert not CheckResult.objects.exists() and not AuditEvent.objects.filter(action="checks.run").exists()


def test_the_operator_sees_the_run_now_form_with_the_servers(client_as, dead_server):
    page = text_of(client_as("operator").get(LIST))

    assert 'data-testid="run-now"' in page and '<option value="chk-dead">' in page


def test_run_now_is_post_only(client_as):
    assert client_as("operator").get(RUN_NOW).status_code == 405


@pytest.mark.django_db(transaction=True)
def test_run_now_on_an_unreachable_server_says_the_failure_and_audits(client_as, dead_server):
    response = client_as("operator").post(RUN_NOW, {"server": "chk-dead", "next": "/checks/?kind=server_health"})

    assert response.status_code == 302 and response["Location"] == "/checks/?kind=server_health"
    [(level, message)] = flashed(response)
    assert level == "error" and message.startswith("Checked chk-dead: server health fail (")
    assert "'chk-dead'" in message and "metrics fail" in message
    assert set(CheckResult.objects.values_list("kind", "status")) == {("server_health", "fail"), ("metrics", "fail")}
    event = AuditEvent.objects.get(action="checks.run")
    assert event.source == "ui" and event.actor == "user:operator-person"
    assert event.details["results"] == {"server_health": "fail", "metrics": "fail"}


@pytest.mark.django_db(transaction=True)
def test_run_now_on_a_deployment_goes_back_to_the_deployment_page_by_default(client_as, deploy):
    digits = deploy("digits")

    response = client_as("operator").post(RUN_NOW, {"deployment": digits.pk, "next": "https://evil.example/"})

    assert response.status_code == 302 and response["Location"] == f"/deployments/{digits.pk}/"
    [(level, message)] = flashed(response)
    assert level == "error" and message.startswith(f"Checked {digits}: model readiness fail")
    assert CheckResult.objects.filter(deployment=digits, kind="model_ready", status="fail").exists()
    assert AuditEvent.objects.filter(action="checks.run", source="ui", model_name="digits").exists()


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({}, "give either deployment=<id> or server=<name>"),
        ({"server": "chk-dead", "deployment": "1"}, "not both"),
        ({"server": "nowhere"}, "server: no server named 'nowhere'"),
        ({"deployment": "999999"}, "deployment: no deployment with id 999999"),
        ({"deployment": "x"}, "deployment: Enter a whole number."),
    ],
)
def test_run_now_with_a_bad_target_says_what_is_wrong_and_checks_nothing(client_as, dead_server, data, said):
    response = client_as("operator").post(RUN_NOW, data)

    assert response.status_code == 302 and response["Location"] == LIST
    [(level, message)] = flashed(response)
    assert level == "error" and said in message
    assert not CheckResult.objects.exists() and not AuditEvent.objects.filter(action="checks.run").exists()


def test_run_now_refuses_what_the_checks_do_not_look_at(client_as, deploy, dead_server):
    unloaded = deploy("digits", desired=DesiredState.UNLOADED)

    response = client_as("operator").post(RUN_NOW, {"deployment": unloaded.pk, "next": "/checks/"})

    assert response.status_code == 302 and response["Location"] == "/checks/"
    [(level, message)] = flashed(response)
    assert level == "error" and "is meant to be unloaded: nothing to check" in message
    assert not CheckResult.objects.exists()


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)
def test_run_now_on_a_live_triton_records_ok_health_and_metrics(client_as, triton):
    InferenceServer.objects.create(name="chk-live", base_url=triton.http_url, metrics_url=triton.metrics_url)

    response = client_as("operator").post(RUN_NOW, {"server": "chk-live"})

    assert response.status_code == 302 and response["Location"] == "/servers/chk-live/"
    [(level, message)] = flashed(response)
    assert (level, message) == ("success", "Checked chk-live: server health ok; server metrics ok")
    assert set(CheckResult.objects.values_list("kind", "status")) == {("server_health", "ok"), ("metrics", "ok")}
    assert AuditEvent.objects.get(action="checks.run").source == "ui"


# --- schedules --------------------------------------------------------------------------


def test_schedules_list_every_task_with_interval_enabled_and_runs(client_as):
    PeriodicTask.objects.filter(name="accuracy").update(enabled=False, total_run_count=7)

    page = text_of(client_as("viewer").get(SCHEDULES))

    rows = re.findall(r'<tr data-testid="schedule-row" data-name="([^"]+)">(.*?)</tr>', page, re.S)
    assert len(rows) == PeriodicTask.objects.count() >= 10
    accuracy = dict(rows)["accuracy"]
    assert "modelhub.monitoring.accuracy_tasks.accuracy_pass" in accuracy and "every 600 s" in accuracy
    assert "disabled" in accuracy and '<td class="num">7</td>' in accuracy and "never" in accuracy


def test_only_an_admin_sees_the_schedule_edit_links(client_as):
    assert 'data-testid="schedule-edit"' not in text_of(client_as("viewer").get(SCHEDULES))
    assert 'data-testid="schedule-edit"' not in text_of(client_as("operator").get(SCHEDULES))
    assert 'data-testid="schedule-edit"' in text_of(client_as("admin").get(SCHEDULES))


def schedule(name: str) -> PeriodicTask:
    return PeriodicTask.objects.select_related("interval").get(name=name)


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_a_viewer_or_operator_cannot_edit_a_schedule(client_as, role):
    health = schedule("server-health")

    assert client_as(role).get(f"{SCHEDULES}{health.pk}/").status_code == 403
    response = client_as(role).post(f"{SCHEDULES}{health.pk}/", {"every_s": 5, "enabled": "on"})

    assert response.status_code == 403 and "&#x27;admin&#x27;" in text_of(response)
    assert schedule("server-health").interval.every == 30
    assert not AuditEvent.objects.filter(action="schedule.update").exists()


def test_an_admin_changes_an_interval_without_moving_the_tasks_that_shared_it(client_as):
    health, reconcile = schedule("server-health"), schedule("reconcile-all-servers")
    assert health.interval_id == reconcile.interval_id  # both every 30 s: one shared row
    admin = client_as("admin")
    form = text_of(admin.get(f"{SCHEDULES}{health.pk}/"))
    assert 'data-testid="schedule-form"' in form and 'value="30"' in form

    response = admin.post(f"{SCHEDULES}{health.pk}/", {"every_s": "45"})

    assert response.status_code == 302 and response["Location"] == SCHEDULES
    assert flashed(response) == [("success", "Schedule 'server-health' saved.")]
    health, reconcile = schedule("server-health"), schedule("reconcile-all-servers")
    assert (health.interval.every, health.interval.period, health.enabled) == (45, IntervalSchedule.SECONDS, False)
    assert health.expire_seconds == 45  # a pass not picked up within its interval is still dropped
    assert reconcile.interval.every == 30 and reconcile.expire_seconds == 30
    event = AuditEvent.objects.get(action="schedule.update")
    assert event.source == "ui" and event.actor == "user:admin-person" and event.object_repr.startswith("server-health")
    assert event.details["changes"] == {"every_s": {"from": 30, "to": 45}, "enabled": {"from": True, "to": False}}


def test_an_unchanged_schedule_saves_without_an_audit_event(client_as):
    health = schedule("server-health")

    response = client_as("admin").post(f"{SCHEDULES}{health.pk}/", {"every_s": "30", "enabled": "on"})

    assert response.status_code == 302
    assert not AuditEvent.objects.filter(action="schedule.update").exists()


@pytest.mark.parametrize(
    ("every_s", "said"),
    [
        ("0", "Every (seconds): Ensure this value is greater than or equal to 1."),
        ("604801", "Every (seconds): Ensure this value is less than or equal to 604800."),
        ("soon", "Every (seconds): Enter a whole number."),
        ("", "Every (seconds): This field is required."),
    ],
)
def test_an_out_of_bounds_interval_is_refused_by_name_and_nothing_changes(client_as, every_s, said):
    health = schedule("server-health")

    response = client_as("admin").post(f"{SCHEDULES}{health.pk}/", {"every_s": every_s, "enabled": "on"})

    assert response.status_code == 400 and said in text_of(response)
    assert schedule("server-health").interval.every == 30
    assert not AuditEvent.objects.filter(action="schedule.update").exists()


def test_a_crontab_schedule_can_be_disabled_but_not_given_an_interval_here(client_as, actor):
    from django_celery_beat.models import CrontabSchedule

    from modelhub.monitoring.schedules import update_schedule

    nightly = PeriodicTask.objects.create(
        name="nightly", task="modelhub.x", crontab=CrontabSchedule.objects.create(minute="0", hour="3")
    )
    form = text_of(client_as("admin").get(f"{SCHEDULES}{nightly.pk}/"))
    assert 'name="every_s"' not in form

    response = client_as("admin").post(f"{SCHEDULES}{nightly.pk}/", {})

    assert response.status_code == 302 and PeriodicTask.objects.get(pk=nightly.pk).enabled is False
    with pytest.raises(ValueError, match="'nightly' does not run on an interval"):
        update_schedule(nightly, actor, every_s=60, enabled=True)
