"""Check results recorded through record() move alert state: ok -> firing -> resolved -> firing."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from modelhub.alerts.evaluation import evaluate
from modelhub.alerts.models import Alert, AlertRule, AlertState, Flip, Scope, Signal
from modelhub.alerts.state import InvalidTransition, flip
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.monitoring.record import Result, record
from modelhub.serving.models import Deployment, InferenceServer
from tests.alerts.conftest import down, server_health, up

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0) - timedelta(hours=1)


def states(alert: Alert) -> list[tuple[str, str]]:
    return [(f.from_state, f.to_state) for f in alert.flips.order_by("id")]


def test_server_down_fires_resolves_and_fires_again(world, rules):
    down(world, T0)
    alert = Alert.objects.get(rule=rules["server_down"])
    assert (alert.state, alert.target, alert.target_label) == ("firing", f"server:{world.server.pk}", "gpu-1")
    assert "connection refused" in alert.last_message and alert.since == T0
    down(world, T0 + timedelta(seconds=30))  # still down: no second flip
    up(world, T0 + timedelta(seconds=60))
    down(world, T0 + timedelta(seconds=90))
    alert.refresh_from_db()
    assert alert.state == "firing"
    assert states(alert) == [("ok", "firing"), ("firing", "resolved"), ("resolved", "firing")]
    resolved = alert.flips.get(to_state="resolved")
    assert resolved.condition_since == T0  # the resolution mail says since when it had been firing


def test_a_healthy_target_makes_no_alert_rows(world, rules):
    up(world, T0)
    assert not Alert.objects.exists() and not Flip.objects.exists()


def test_for_seconds_keeps_the_first_bad_time(world, rules):
    rule = rules["server_down"]
    rule.for_seconds = 60
    rule.save()
    down(world, T0)
    down(world, T0 + timedelta(seconds=30))
    alert = Alert.objects.get()
    assert alert.state == "ok" and alert.bad_since == T0
    down(world, T0 + timedelta(seconds=60))
    alert.refresh_from_db()
    assert alert.state == "firing"
    assert alert.flips.get().condition_since == T0
    # A good result in between restarts the clock.
    up(world, T0 + timedelta(seconds=70))
    down(world, T0 + timedelta(seconds=80))
    down(world, T0 + timedelta(seconds=120))
    alert.refresh_from_db()
    assert (alert.state, alert.bad_since) == ("resolved", T0 + timedelta(seconds=80))


def test_results_already_evaluated_are_never_evaluated_twice(world, rules):
    rows = down(world, T0, pass_id="pass-1")
    assert down(world, T0, pass_id="pass-1") == []  # the same pass again writes nothing
    evaluate(rows)  # and the same rows handed over again change nothing
    up_rows = up(world, T0 + timedelta(seconds=10))
    evaluate(rows)  # an older result after a newer one is ignored
    alert = Alert.objects.get()
    assert alert.state == "resolved" and alert.last_result_id_seen == up_rows[0].pk
    assert states(alert) == [("ok", "firing"), ("firing", "resolved")]


def test_flip_refuses_a_transition_the_machine_does_not_have(world, rules):
    down(world, T0)
    alert = Alert.objects.get()
    with pytest.raises(InvalidTransition, match="firing -> firing"):
        flip(alert, AlertState.FIRING, T0)
    assert alert.flips.count() == 1


def _latency(world, p95: float | None, at, status=Status.OK) -> Result:
    return Result(
        kind=CheckKind.LATENCY,
        status=status,
        server_id=world.server.pk,
        deployment_id=world.deployment.pk,
        version_id=world.version.pk,
        value=p95,
        details={"p50_ms": 1.0, "p95_ms": p95, "requests": 20, "errors": 0},
        time=at,
    )


def test_latency_compares_p95_with_the_model_slo_and_a_model_rule_replaces_the_global_one(world, rules):
    record([_latency(world, 40.0, T0)])  # SLO 50 ms
    assert not Alert.objects.exists()
    record([_latency(world, 80.0, T0 + timedelta(seconds=10))])
    alert = Alert.objects.get(rule=rules["latency_p95"])
    assert alert.state == "firing" and alert.last_value == 80.0 and alert.last_details["threshold"] == 50.0
    assert alert.target == f"deployment:{world.deployment.pk}" and alert.model == world.model
    assert alert.target_label == "digits v1 on gpu-1"
    # The model's own rule (100 ms) replaces the global one for its targets.
    own = AlertRule.objects.create(
        name="digits slow", signal=Signal.LATENCY_P95, scope=Scope.MODEL, model=world.model, threshold=100.0
    )
    record([_latency(world, 80.0, T0 + timedelta(seconds=20))])
    assert not Alert.objects.filter(rule=own).exists()
    record([_latency(world, 120.0, T0 + timedelta(seconds=30))])
    assert Alert.objects.get(rule=own).state == "firing"
    assert Alert.objects.get(rule=rules["latency_p95"]).last_value == 80.0  # no longer evaluated


def test_failure_rate_above_one_percent_fires(world, rules):
    def stats(rate, at):
        return Result(
            kind=CheckKind.STATS,
            status=Status.OK,
            server_id=world.server.pk,
            deployment_id=world.deployment.pk,
            version_id=world.version.pk,
            value=rate,
            time=at,
        )

    record([stats(0.01, T0)])
    assert not Alert.objects.exists()
    record([stats(0.02, T0 + timedelta(seconds=10))])
    assert Alert.objects.get(rule=rules["failure_rate"]).state == "firing"


def test_point_rule_reads_the_points_of_a_result(world, rules):
    rule = AlertRule.objects.create(name="CPU hot", signal=Signal.POINT, series="cpu_util", threshold=0.9)
    target = f"server:{world.server.pk}"
    for i, cpu in enumerate((0.5, 0.95)):
        record(
            [
                Result(
                    kind=CheckKind.METRICS,
                    status=Status.OK,
                    server_id=world.server.pk,
                    points=[("cpu_util", target, cpu), ("memory_used_bytes", target, 1e9)],
                    time=T0 + timedelta(seconds=10 * i),
                )
            ]
        )
    alert = Alert.objects.get(rule=rule)
    assert (alert.state, alert.target, alert.last_value) == ("firing", target, 0.95)


def test_status_rules_follow_the_check_kind(world, rules):
    def result(kind, status, message=""):
        return Result(
            kind=kind,
            status=status,
            server_id=world.server.pk,
            deployment_id=world.deployment.pk,
            version_id=world.version.pk,
            value=0.42 if kind == CheckKind.ACCURACY else None,
            message=message,
            time=T0,
        )

    record(
        [
            result(CheckKind.MODEL_READY, Status.FAIL, "model 'digits' version 1 is not ready: unloaded"),
            result(CheckKind.SCHEMA, Status.FAIL, "output OUTPUT: datatype FP32 registered, Triton serves FP64"),
            result(CheckKind.ACCURACY, Status.FAIL, "accuracy 0.42 below threshold 0.9"),
        ]
    )
    firing = {a.rule.signal: a for a in Alert.objects.select_related("rule").filter(state="firing")}
    assert set(firing) == {"model_not_ready", "schema_mismatch", "accuracy_below_threshold"}
    assert firing["accuracy_below_threshold"].target == f"version:{world.version.pk}"
    assert "unloaded" in firing["model_not_ready"].last_message


def test_a_disabled_rule_is_not_evaluated(world, rules):
    AlertRule.objects.filter(signal="server_down").update(enabled=False)
    down(world, T0)
    assert not Alert.objects.exists()


def test_a_pass_of_1000_results_costs_a_fixed_number_of_queries(world, rules):
    servers = InferenceServer.objects.bulk_create(
        [InferenceServer(name=f"s{i}", base_url=f"http://127.0.0.1:{10000 + i}") for i in range(100)]
    )
    deployments = Deployment.objects.bulk_create([Deployment(version=world.version, server=s) for s in servers])
    results = [
        Result(kind=CheckKind.SERVER_HEALTH, status=Status.FAIL, server_id=s.pk, value=0.0, message="down", time=T0)
        for s in servers
    ] + [
        Result(
            kind=kind,
            status=Status.OK,
            server_id=d.server_id,
            deployment_id=d.pk,
            version_id=world.version.pk,
            value=0.0,  # no failures, no latency: nothing breaks
            time=T0,
        )
        for d in deployments
        for kind in (CheckKind.MODEL_READY, CheckKind.SCHEMA, CheckKind.STATS, CheckKind.LATENCY)
    ]
    results += results[:500]  # 1,000 in all, repeats included
    with CaptureQueriesContext(connection) as queries:
        record(results)
    # 100 alerts fire (2 queries each: the state and its flip); the rest is a handful for the batch.
    assert Alert.objects.filter(state="firing").count() == 100
    assert len(queries) <= 100 * 2 + 20, len(queries)
    assert CheckResult.objects.count() == len(results)


def test_while_a_server_is_down_what_runs_on_it_does_not_alert_on_its_own(world, rules):
    def not_ready(at):
        return Result(
            kind=CheckKind.MODEL_READY,
            status=Status.FAIL,
            server_id=world.server.pk,
            deployment_id=world.deployment.pk,
            version_id=world.version.pk,
            message="connection refused",
            time=at,
        )

    record([server_health(world, False, "refused", time=T0), not_ready(T0)])  # one batch: health says down
    InferenceServer.objects.filter(pk=world.server.pk).update(live=False)  # as record_server_health writes it
    record([not_ready(T0 + timedelta(seconds=2))])  # a later pass, the server still down
    assert [a.rule.signal for a in Alert.objects.select_related("rule")] == ["server_down"]
    # Back up, but the model is not: now that is news.
    InferenceServer.objects.filter(pk=world.server.pk).update(live=True)
    up(world, T0 + timedelta(seconds=3))
    record([not_ready(T0 + timedelta(seconds=4))])
    assert Alert.objects.get(rule__signal="model_not_ready").state == "firing"
