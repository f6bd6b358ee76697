"""Check results -> alert state: which rules speak about a result, and whether it breaks them.

Called with the CheckResult rows `record()` just wrote (the `results_recorded`
signal). A batch costs a fixed number of queries plus two per state change: the
rules, the versions and servers named, the points (only with point rules), and
the alerts, created and locked in one go each.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction

from modelhub.alerts.models import (
    SIGNAL_KINDS,
    Alert,
    AlertRule,
    AlertState,
    Comparison,
    Flip,
    Scope,
    Signal,
)
from modelhub.alerts.state import flip
from modelhub.alerts.tasks import send_notifications
from modelhub.monitoring.models import CheckKind, CheckResult, Point, Status
from modelhub.registry.models import ModelVersion
from modelhub.serving.models import InferenceServer

log = logging.getLogger(__name__)

DEFAULT_FAILURE_RATE = 0.01
# Results about a version itself, wherever it ran: their alert is the version's.
VERSION_KINDS = frozenset({CheckKind.ACCURACY, CheckKind.MEMORY})
SERVER_KINDS = frozenset({CheckKind.SERVER_HEALTH, CheckKind.METRICS})
_SCOPE_RANK = {Scope.MODEL: 0, Scope.SERVER: 1, Scope.GLOBAL: 2}


@dataclass
class Verdict:
    rule: AlertRule
    result: CheckResult
    target: str
    bad: bool
    value: float | None
    threshold: float | None


class Context:
    """What a batch needs to know about the versions and servers its results name."""

    def __init__(self, results: Sequence[CheckResult]):
        version_ids = {r.version_id for r in results if r.version_id}
        server_ids = {r.server_id for r in results if r.server_id}
        self.versions = {v.pk: v for v in ModelVersion.objects.select_related("model").filter(pk__in=version_ids)}
        rows = InferenceServer.objects.filter(pk__in=server_ids).values_list("pk", "name", "live")
        self.servers = {pk: name for pk, name, _ in rows}
        # Servers known to be down, by their health fields or by this batch's own health results:
        # what runs on them is down with them, and the server's alert says so (one mail, not one per model).
        self.down = {pk for pk, _, live in rows if live is False}
        for result in results:
            if result.kind == CheckKind.SERVER_HEALTH and result.server_id:
                (self.down.add if result.status == Status.FAIL else self.down.discard)(result.server_id)

    def inhibited(self, result: CheckResult, target: str) -> bool:
        """A result about something on a down server: not judged while the server is down."""
        return not target.startswith("server:") and result.server_id in self.down

    def model_id(self, result: CheckResult) -> int | None:
        version = self.versions.get(result.version_id)
        return version.model_id if version else None

    def slo(self, result: CheckResult) -> float | None:
        version = self.versions.get(result.version_id)
        return version.model.latency_slo_ms if version else None

    def label(self, target: str, result: CheckResult) -> str:
        kind = target.split(":", 1)[0]
        server = self.servers.get(result.server_id, f"server {result.server_id}")
        version = self.versions.get(result.version_id)
        version_label = f"{version.model.name} v{version.number}" if version else f"version {result.version_id}"
        if kind == "server":
            return server
        if kind == "version":
            return version_label
        return f"{version_label} on {server}"


def result_target(result: CheckResult) -> str | None:
    if result.kind in SERVER_KINDS:
        return f"server:{result.server_id}" if result.server_id else None
    if result.kind in VERSION_KINDS or not result.deployment_id:
        return f"version:{result.version_id}" if result.version_id else None
    return f"deployment:{result.deployment_id}"


def applicable_rules(rules: list[AlertRule], result: CheckResult, model_id: int | None) -> list[AlertRule]:
    """The rules that speak about `result`: per signal and series, the most specific scope only
    (a model's own rule replaces the global one for its targets)."""
    matching = [
        rule
        for rule in rules
        if (SIGNAL_KINDS[rule.signal] in (None, result.kind))
        and (
            rule.scope == Scope.GLOBAL
            or (rule.scope == Scope.MODEL and model_id is not None and rule.model_id == model_id)
            or (rule.scope == Scope.SERVER and rule.server_id == result.server_id)
        )
    ]
    best: dict[tuple[str, str], int] = {}
    for rule in matching:
        key = (rule.signal, rule.series)
        best[key] = min(best.get(key, 9), _SCOPE_RANK[rule.scope])
    return [rule for rule in matching if _SCOPE_RANK[rule.scope] == best[(rule.signal, rule.series)]]


def judge(rule: AlertRule, result: CheckResult, context: Context) -> tuple[bool, float | None, float | None] | None:
    """(bad, value, threshold) of `result` under `rule`; None when the rule cannot judge it."""
    if rule.signal == Signal.LATENCY_P95:
        threshold = rule.threshold if rule.threshold is not None else context.slo(result)
        if result.value is None:  # no request answered: the check's own verdict
            return (result.status == Status.FAIL, None, threshold)
        if threshold is None:  # no SLO for this model and no threshold of the rule
            return None
        return (Comparison(rule.comparison).breaks(result.value, threshold), result.value, threshold)
    if rule.signal == Signal.FAILURE_RATE:
        threshold = rule.threshold if rule.threshold is not None else DEFAULT_FAILURE_RATE
        if result.value is None:
            return None
        return (Comparison(rule.comparison).breaks(result.value, threshold), result.value, threshold)
    return (result.status == Status.FAIL, result.value, None)


def _point_verdicts(rules: list[AlertRule], results: Sequence[CheckResult], context: Context) -> list[Verdict]:
    """Point rules read the points each result added: one query for the batch."""
    point_rules = [rule for rule in rules if rule.signal == Signal.POINT and rule.threshold is not None]
    if not point_rules:
        return []
    by_key: dict[tuple, CheckResult] = {}
    for result in results:
        for kind, pk in (
            ("server", result.server_id),
            ("deployment", result.deployment_id),
            ("version", result.version_id),
        ):
            if pk:
                by_key.setdefault((f"{kind}:{pk}", result.created_at), result)
    points = Point.objects.filter(
        metric__in={rule.series for rule in point_rules}, time__in={r.created_at for r in results}
    ).values_list("metric", "target", "time", "value")
    verdicts = []
    for metric, target, time, value in points:
        result = by_key.get((target, time))
        if result is None or context.inhibited(result, target):
            continue
        for rule in applicable_rules([r for r in point_rules if r.series == metric], result, context.model_id(result)):
            bad = Comparison(rule.comparison).breaks(value, rule.threshold)
            verdicts.append(Verdict(rule, result, target, bad, value, rule.threshold))
    return verdicts


def verdicts_for(results: Sequence[CheckResult], rules: list[AlertRule], context: Context) -> list[Verdict]:
    verdicts = []
    status_rules = [rule for rule in rules if rule.signal != Signal.POINT]
    for result in results:
        target = result_target(result)
        if target is None or context.inhibited(result, target):
            continue
        for rule in applicable_rules(status_rules, result, context.model_id(result)):
            judged = judge(rule, result, context)
            if judged is not None:
                verdicts.append(Verdict(rule, result, target, *judged))
    verdicts += _point_verdicts(rules, results, context)
    verdicts.sort(key=lambda v: (v.result.created_at, v.result.pk))
    return verdicts


def _new_alert(verdict: Verdict, context: Context) -> Alert:
    result = verdict.result
    kind = verdict.target.split(":", 1)[0]
    version = context.versions.get(result.version_id)
    return Alert(
        rule=verdict.rule,
        target=verdict.target,
        target_label=context.label(verdict.target, result)[:300],
        server_id=result.server_id if kind != "version" else None,
        deployment_id=result.deployment_id if kind == "deployment" else None,
        version_id=result.version_id if kind != "server" else None,
        model_id=version.model_id if version and kind != "server" else None,
        since=result.created_at,
    )


def _lock(pairs: set[tuple[int, str]], rules: dict[int, AlertRule]) -> dict[tuple[int, str], Alert]:
    rows = (
        Alert.objects.select_for_update()
        .filter(rule_id__in={p[0] for p in pairs}, target__in={p[1] for p in pairs})
        .order_by("id")  # one lock order for every pass: no deadlock between two
    )
    alerts = {}
    for alert in rows:
        if (alert.rule_id, alert.target) in pairs:
            alert.rule = rules[alert.rule_id]
            alerts[(alert.rule_id, alert.target)] = alert
    return alerts


def _locked_alerts(verdicts: list[Verdict], context: Context) -> dict[tuple[int, str], Alert]:
    """The alerts of the verdicts' (rule, target) pairs, locked; made for pairs that break a rule."""
    rules = {v.rule.pk: v.rule for v in verdicts}
    alerts = _lock({(v.rule.pk, v.target) for v in verdicts}, rules)
    missing: dict[tuple[int, str], Verdict] = {}
    for verdict in verdicts:
        key = (verdict.rule.pk, verdict.target)
        if verdict.bad and key not in alerts:
            missing.setdefault(key, verdict)
    if missing:
        # A concurrent pass may make the same alert: the unique (rule, target) keeps one, then both lock it.
        Alert.objects.bulk_create([_new_alert(v, context) for v in missing.values()], ignore_conflicts=True)
        alerts.update(_lock(set(missing), rules))
    return alerts


def apply(alert: Alert, verdict: Verdict) -> Flip | None:
    """One verdict on its (locked) alert: the breach clock, the snapshot, and a flip when due."""
    result, at = verdict.result, verdict.result.created_at
    alert.last_value = verdict.value
    alert.last_message = result.message
    alert.last_details = {**result.details, "threshold": verdict.threshold, "status": result.status}
    alert.last_result = result
    alert.last_result_id_seen = result.pk
    alert.last_evaluated_at = at
    if not verdict.bad:
        alert.bad_since = None
        return flip(alert, AlertState.RESOLVED, at) if alert.state == AlertState.FIRING else None
    if alert.bad_since is None:
        alert.bad_since = at
    held = at - alert.bad_since >= timedelta(seconds=verdict.rule.for_seconds)
    if alert.state != AlertState.FIRING and held:
        return flip(alert, AlertState.FIRING, at)
    return None


def evaluate(results: Sequence[CheckResult]) -> list[Flip]:
    """Evaluate the enabled rules on `results`; return the flips written.

    Idempotent: a result at or before an alert's last evaluated one changes nothing.
    """
    rules = list(AlertRule.objects.filter(enabled=True))
    results = [r for r in results if r.pk is not None]
    if not rules or not results:
        return []
    context = Context(results)
    verdicts = verdicts_for(results, rules, context)
    if not verdicts:
        return []
    flips: list[Flip] = []
    with transaction.atomic():
        alerts = _locked_alerts(verdicts, context)
        touched: dict[int, Alert] = {}
        for verdict in verdicts:
            alert = alerts.get((verdict.rule.pk, verdict.target))
            if alert is None or verdict.result.pk <= alert.last_result_id_seen:
                continue  # a good result where nothing ever broke, or one seen already
            made = apply(alert, verdict)
            if made is not None:
                flips.append(made)
            touched[alert.pk] = alert
        Alert.objects.bulk_update(
            touched.values(),
            [
                "bad_since",
                "last_value",
                "last_message",
                "last_details",
                "last_result",
                "last_result_id_seen",
                "last_evaluated_at",
            ],
        )
        if flips:
            transaction.on_commit(_send_soon)
    return flips


def _send_soon() -> None:
    try:
        send_notifications.delay()
    except Exception:  # the broker is down: the scheduled run sends them
        log.exception("could not queue send_notifications; the schedule will send the flips")
