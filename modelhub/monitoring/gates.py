"""Gated promotion: may a candidate version become what an alias points at?

Four gates, in this order, each judged on what Triton does *now*:

- loaded: a deployment of the candidate, observed loaded on an enabled server,
  that Triton says is ready (the server the other gates then run on);
- conforms: Triton's metadata for it matches the registered schema;
- latency: a latency probe's p95 is within the model's `latency_slo_ms` (no SLO:
  passes, with a note) and no probe request failed;
- accuracy: with an evaluation set, the candidate scores no worse than the
  current version's latest result minus the set's tolerance (plus, for MAE and
  RMSE, where lower is better) and not worse than the set's threshold. No
  evaluation set: passes, with a note.

Every gate that can run runs, so one answer shows everything that is wrong;
when the candidate is not loaded the others cannot run and say so. The checks
behind the gates are real check results, stored through record() like those of
a scheduled pass. No database transaction is open while Triton is called.
"""

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from modelhub.audit.actors import Actor
from modelhub.monitoring.accuracy import evaluate
from modelhub.monitoring.checks.latency import probe_latency
from modelhub.monitoring.checks.readiness import check_ready
from modelhub.monitoring.checks.schema import check_schema
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.monitoring.record import Result, record
from modelhub.registry.models import Alias, EvaluationSet, Model, ModelVersion
from modelhub.registry.services import move_alias
from modelhub.serving.models import Deployment, DesiredState, ObservedState
from modelhub.serving.triton_client import TritonClient

log = logging.getLogger(__name__)

PASSED, FAILED, NOT_RUN = "passed", "failed", "not_run"
# Scores are floats computed on two runs: equal within this counts as equal.
EPSILON = 1e-9


@dataclass
class Gate:
    name: str
    status: str  # passed / failed / not_run
    message: str
    figures: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "status": self.status,
            "passed": self.passed,
            "message": self.message,
            "figures": self.figures,
        }


@dataclass
class GateReport:
    model: str
    candidate: int
    current: int | None
    gates: list[Gate]
    server: str | None = None  # where the gates ran

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    @property
    def failed(self) -> list[Gate]:
        return [gate for gate in self.gates if gate.status == FAILED]

    def summary(self) -> str:
        """One line for a CI log: which gates failed and why, or that all passed."""
        if self.passed:
            return f"{self.model} v{self.candidate} passed every gate ({', '.join(g.name for g in self.gates)})"
        reasons = "; ".join(f"gate {gate.name!r} failed: {gate.message}" for gate in self.failed)
        return f"{self.model} v{self.candidate} was not promoted: {reasons}"

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "candidate": self.candidate,
            "current": self.current,
            "server": self.server,
            "passed": self.passed,
            "gates": [gate.as_dict() for gate in self.gates],
        }


class GateFailed(Exception):
    """A gated promotion was refused; the alias did not move."""

    def __init__(self, report: GateReport, message: str | None = None):
        self.report = report
        super().__init__(message or report.summary())


def evaluate_gates(
    alias_model: Model, candidate_version: ModelVersion, current_version: ModelVersion | None
) -> GateReport:
    """Run the gates for promoting `candidate_version` over `current_version`
    (None: the alias points nowhere yet) and store the checks' results."""
    results: list[Result] = []
    clients: list[TritonClient] = []
    try:
        report = _run_gates(alias_model, candidate_version, current_version, results, clients)
    finally:
        for client in clients:
            client.close()
        if results:
            record(results)
    return report


def promote_with_gates(model: Model, alias: str, version: ModelVersion, actor: Actor) -> tuple[Alias, GateReport]:
    """Point `alias` at `version` only if every gate passes; raise GateFailed otherwise.

    The gates compare with the version the alias points at when they start; if
    someone moves the alias meanwhile, that comparison no longer holds and the
    promotion is refused too (run it again).
    """
    current_alias = Alias.objects.select_related("version").filter(model=model, name=alias).first()
    current = current_alias.version if current_alias else None
    report = evaluate_gates(model, version, current)
    if not report.passed:
        raise GateFailed(report)
    with transaction.atomic():
        # The same lock order as move_alias (model, then alias), which re-takes them.
        Model.objects.select_for_update(no_key=True).get(pk=model.pk)
        now = Alias.objects.select_for_update().filter(model=model, name=alias).values_list("version_id", flat=True)
        now_id = now.first()
        if now_id != (current.pk if current else None):
            moved_to = ModelVersion.objects.filter(pk=now_id).values_list("number", flat=True).first()
            raise GateFailed(
                report,
                f"{model.name}@{alias} moved to {f'v{moved_to}' if moved_to else 'nothing'} while the gates ran "
                f"(they compared with {f'v{current.number}' if current else 'no version'}); run the promotion again",
            )
        moved = move_alias(model, alias, version, actor, gate=report.as_dict())
    return moved, report


# --- the gates ---------------------------------------------------------------------------------


def _run_gates(model, candidate, current, results: list[Result], clients: list[TritonClient]) -> GateReport:
    report = GateReport(model.name, candidate.number, current.number if current else None, gates=[])
    deployment, client, loaded = _loaded_gate(candidate, results, clients)
    report.gates.append(loaded)
    if deployment is None:
        why = f"not run: {model.name} v{candidate.number} is not loaded"
        report.gates += [Gate(name, NOT_RUN, why) for name in ("conforms", "latency", "accuracy")]
        return report
    report.server = deployment.server.name
    report.gates.append(_guarded("conforms", lambda: _conforms_gate(client, deployment, results)))
    report.gates.append(_guarded("latency", lambda: _latency_gate(model, client, deployment, results)))
    report.gates.append(
        _guarded("accuracy", lambda: _accuracy_gate(model, candidate, current, client, deployment, results, clients))
    )
    return report


def _guarded(name: str, run) -> Gate:
    # A gate that cannot be judged is a failed gate: promotion fails closed.
    try:
        return run()
    except Exception as exc:
        log.exception("gate %s could not be evaluated", name)
        return Gate(name, FAILED, f"could not be evaluated: {type(exc).__name__}: {exc}")


def _ready_deployment(
    version: ModelVersion, results: list[Result], clients: list[TritonClient]
) -> tuple[Deployment | None, TritonClient | None, list[str], list[str]]:
    """The first deployment of `version` meant and observed loaded on an enabled
    server whose Triton says it is ready, with its client; else None and why not."""
    deployments = (
        Deployment.objects.filter(
            version=version, desired=DesiredState.LOADED, observed=ObservedState.LOADED, server__enabled=True
        )
        .select_related("server", "version__model")
        .order_by("server__name")
    )
    tried, problems = [], []
    for deployment in deployments:
        client = TritonClient.for_server(deployment.server, timeout=settings.MONITORING_CALL_TIMEOUT_S)
        clients.append(client)
        result = check_ready(client, deployment)
        results.append(result)
        tried.append(deployment.server.name)
        if result.status != Status.FAIL:
            return deployment, client, tried, problems
        problems.append(f"{deployment.server.name}: {result.message or 'not ready'}")
    return None, None, tried, problems


def _loaded_gate(candidate: ModelVersion, results, clients) -> tuple[Deployment | None, TritonClient | None, Gate]:
    deployment, client, tried, problems = _ready_deployment(candidate, results, clients)
    label = f"{candidate.model.name} v{candidate.number}"
    if deployment is not None:
        figures = {"server": deployment.server.name, "deployment": deployment.pk}
        return deployment, client, Gate("loaded", PASSED, f"{label} is loaded on {deployment.server.name}", figures)
    if not tried:
        message = (
            f"{label} is not loaded on any enabled server: deploy it (POST …/versions/{candidate.number}/deploy/) "
            "and wait until it is loaded"
        )
    else:
        message = f"{label} is recorded as loaded but Triton does not serve it: {'; '.join(problems)}"
    return None, None, Gate("loaded", FAILED, message, {"servers_tried": tried})


def _conforms_gate(client: TritonClient, deployment: Deployment, results: list[Result]) -> Gate:
    result = check_schema(client, deployment)
    results.append(result)
    if result.status == Status.FAIL:
        return Gate("conforms", FAILED, result.message or "served metadata differs from the registered schema")
    return Gate("conforms", PASSED, "Triton's metadata matches the registered schema")


def _latency_gate(model: Model, client: TritonClient, deployment: Deployment, results: list[Result]) -> Gate:
    result = probe_latency(client, deployment)
    results.append(result)
    details = result.details or {}
    p95 = details.get("p95_ms", result.value)
    slo = model.latency_slo_ms
    errors = details.get("errors", 0) or 0
    figures = {
        "p50_ms": details.get("p50_ms"),
        "p95_ms": p95,
        "p99_ms": details.get("p99_ms"),
        "slo_ms": slo,
        "requests": details.get("requests"),
        "errors": errors,
    }
    if p95 is None or errors:
        why = result.message or f"{errors} of {details.get('requests')} probe requests failed"
        return Gate("latency", FAILED, f"the latency probe failed: {why}", figures)
    if slo is None:
        return Gate("latency", PASSED, f"p95 {p95:.1f} ms; {model.name} has no latency SLO, so any p95 passes", figures)
    if p95 > slo:
        return Gate("latency", FAILED, f"p95 {p95:.1f} ms is over {model.name}'s SLO of {slo:g} ms", figures)
    return Gate("latency", PASSED, f"p95 {p95:.1f} ms is within the SLO of {slo:g} ms", figures)


def _accuracy_gate(model, candidate, current, client, deployment, results, clients) -> Gate:
    evaluation_set = EvaluationSet.objects.filter(model=model).first()
    if evaluation_set is None:
        return Gate("accuracy", PASSED, f"{model.name} has no evaluation set: accuracy not compared")
    metric = evaluation_set.metric
    lower = evaluation_set.lower_is_better
    result = evaluate(client, deployment, evaluation_set, time_limit_s=settings.ACCURACY_API_TIMEOUT_S)
    results.append(result)
    score = result.value
    figures = {
        "metric": metric,
        "lower_is_better": lower,
        "candidate": score,
        "current": None,
        "current_source": None,
        "tolerance": evaluation_set.tolerance,
        "threshold": evaluation_set.threshold,
        "rows": evaluation_set.rows,
    }
    if score is None:
        return Gate("accuracy", FAILED, f"the accuracy check failed: {result.message}", figures)
    name = f"v{candidate.number}"
    threshold = evaluation_set.threshold
    if threshold is not None and (score > threshold + EPSILON if lower else score < threshold - EPSILON):
        side = "above" if lower else "below"
        return Gate(
            "accuracy", FAILED, f"{name} scores {score:.4g} {metric}, {side} the threshold {threshold:g}", figures
        )
    baseline, source = _current_score(current, candidate, evaluation_set, results, clients)
    figures["current"], figures["current_source"] = baseline, source
    if baseline is None:
        return Gate("accuracy", PASSED, f"{name} scores {score:.4g} {metric}; {source}", figures)
    tolerance = evaluation_set.tolerance
    limit = baseline + tolerance if lower else baseline - tolerance
    figures["limit"] = limit
    worse = score > limit + EPSILON if lower else score < limit - EPSILON
    comparison = (
        f"{name} scores {score:.4g} {metric}, v{current.number} {baseline:.4g} ({source}); "
        f"tolerance {tolerance:g}, so {'at most' if lower else 'at least'} {limit:.4g} passes"
    )
    return Gate("accuracy", FAILED if worse else PASSED, comparison, figures)


def _current_score(current, candidate, evaluation_set, results, clients) -> tuple[float | None, str]:
    """The current version's score on this evaluation set, and where it comes from
    (or None and why there is none to compare with)."""
    if current is None or current.pk == candidate.pk:
        return None, "no current version to compare with"
    latest = (
        CheckResult.objects.filter(
            kind=CheckKind.ACCURACY,
            version=current,
            value__isnull=False,
            # Results on another evaluation set (an earlier upload) measure something else.
            details__evaluation_set=evaluation_set.sha256,
        )
        .order_by("-created_at", "-id")
        .first()
    )
    if latest is not None:
        return latest.value, f"its latest result, {latest.created_at:%Y-%m-%d %H:%M:%S} UTC"
    deployment, client, _, problems = _ready_deployment(current, results, clients)
    if deployment is None:
        why = f" ({'; '.join(problems)})" if problems else ""
        return None, f"v{current.number} has no result on this evaluation set and is not loaded{why}: not compared"
    result = evaluate(client, deployment, evaluation_set, time_limit_s=settings.ACCURACY_API_TIMEOUT_S)
    results.append(result)
    if result.value is None:
        return None, f"v{current.number} could not be evaluated ({result.message}): not compared"
    return result.value, f"evaluated now on {deployment.server.name}"
