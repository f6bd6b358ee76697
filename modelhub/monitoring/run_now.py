"""Checks run on demand ("run now"): one deployment's or one server's, in the
calling thread, through the same pass code as the schedule (passes.run_pass,
restricted to that target), so a result means the same whoever asked for it.

Every Triton call has MONITORING_CALL_TIMEOUT_S, so a dead or hanging server
costs a bounded time. No database transaction is open while Triton is called.
Each run is audited ("checks.run", with each check's status) for the actor who asked,
whether through the API or the UI.
"""

import uuid

from django.db import transaction

from modelhub.audit.actors import Actor
from modelhub.audit.log import record as audit
from modelhub.monitoring import passes
from modelhub.monitoring.models import CheckResult
from modelhub.serving.models import Deployment, DesiredState, InferenceServer


class CannotCheck(Exception):
    """The target is not something the checks look at (a disabled server, a deployment meant to be unloaded)."""


def check_deployment_now(deployment: Deployment, actor: Actor) -> list[CheckResult]:
    """Readiness and schema; then, when it is loaded, a latency probe."""
    if not deployment.server.enabled:
        raise CannotCheck(f"server {deployment.server.name!r} is disabled: its deployments are not checked")
    if deployment.server.drained_at is not None:
        raise CannotCheck(f"server {deployment.server.name!r} is drained (its address left its group's DNS name)")
    if deployment.desired != DesiredState.LOADED:
        raise CannotCheck(f"deployment {deployment.pk} ({deployment}) is meant to be unloaded: nothing to check")
    return _audited(actor, deployment, _run((passes.MODEL_CHECKS, passes.LATENCY), deployment_ids=[deployment.pk]))


def check_server_now(server: InferenceServer, actor: Actor) -> list[CheckResult]:
    """Health, then metrics."""
    if not server.enabled:
        raise CannotCheck(f"server {server.name!r} is disabled: it is not checked")
    if server.drained_at is not None:
        raise CannotCheck(f"server {server.name!r} is drained (its address left its group's DNS name): not checked")
    return _audited(actor, server, _run((passes.HEALTH, passes.METRICS), server_ids=[server.pk]))


def _run(kinds: tuple[str, ...], **target) -> list[CheckResult]:
    run = f"now:{uuid.uuid4().hex}"
    for kind in kinds:
        passes.run_pass(kind, f"{run}:{kind}", **target)
    # record() files each result under "<pass id>:<kind>:<target>": this run's rows.
    return list(CheckResult.objects.filter(dedupe_key__startswith=f"{run}:").order_by("id"))


def _audited(actor: Actor, target, rows: list[CheckResult]) -> list[CheckResult]:
    with transaction.atomic():
        audit(actor, "checks.run", target, results={r.kind: r.status for r in rows})
    return rows
