"""Celery tasks of the accuracy check (queue "accuracy": a long run never delays a health check).

`accuracy_pass` (scheduled) picks every loaded version of a model with an
evaluation set whose accuracy is unknown, stale (older than
MONITORING_ACCURACY_INTERVAL_S) or measured on an earlier set, and enqueues
`run_accuracy` for one deployment of it. Both take ids; a retried or
duplicated run records its result once (record's pass id).
"""

import logging
import uuid
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db.models import F, Max, OuterRef, Q, Subquery
from django.utils import timezone

from modelhub.monitoring.accuracy import NoEvaluationSet, evaluate
from modelhub.monitoring.models import CheckKind, CheckResult
from modelhub.monitoring.record import record
from modelhub.registry.models import EvaluationSet
from modelhub.serving.models import Deployment, DesiredState, ObservedState
from modelhub.serving.triton_client import TritonClient

log = logging.getLogger(__name__)


def deployments_due(now=None) -> list[Deployment]:
    """One loaded deployment per version that needs an accuracy result now."""
    now = now or timezone.now()
    last_result = (
        CheckResult.objects.filter(kind=CheckKind.ACCURACY, version_id=OuterRef("version_id"))
        .order_by()
        .values("version_id")
        .annotate(last=Max("created_at"))
        .values("last")
    )
    set_since = EvaluationSet.objects.filter(model_id=OuterRef("version__model_id")).values("created_at")
    candidates = (
        Deployment.objects.filter(
            desired=DesiredState.LOADED,
            observed=ObservedState.LOADED,
            server__enabled=True,
            version__model__evaluation_set__isnull=False,
        )
        .annotate(last=Subquery(last_result), set_since=Subquery(set_since))
        .filter(
            Q(last__isnull=True)
            | Q(last__lt=now - timedelta(seconds=settings.MONITORING_ACCURACY_INTERVAL_S))
            | Q(last__lt=F("set_since"))
        )
        .select_related("version__model", "server")
        .order_by("version_id", "server__name")
    )
    chosen: dict[int, Deployment] = {}
    for deployment in candidates:
        chosen.setdefault(deployment.version_id, deployment)  # a version's accuracy is the same on any server
    return list(chosen.values())


@shared_task
def accuracy_pass() -> list[int]:
    """Scheduled: enqueue an accuracy run for each version due one; returns the deployment ids."""
    pass_id = f"accuracy-pass:{uuid.uuid4().hex}"
    ids = [deployment.pk for deployment in deployments_due()]
    for deployment_id in ids:
        run_accuracy.delay(deployment_id, f"{pass_id}:{deployment_id}")
    return ids


@shared_task(acks_late=True)
def run_accuracy(deployment_id: int, pass_id: str | None = None) -> int | None:
    """Measure one deployment's accuracy and record it; returns the result's id (None when
    nothing was recorded: the deployment is gone, its model has no set, or this pass ran already)."""
    deployment = Deployment.objects.select_related("version__model", "server").filter(pk=deployment_id).first()
    if deployment is None:
        return None
    pass_id = pass_id or f"accuracy:{uuid.uuid4().hex}"
    if CheckResult.objects.filter(dedupe_key__startswith=f"{pass_id}:").exists():
        return None  # a retried message of a run that recorded already: do not send the set again
    client = TritonClient.for_server(deployment.server)
    try:
        result = evaluate(client, deployment)
    except NoEvaluationSet:
        return None
    finally:
        client.close()
    rows = record([result], pass_id)
    if rows:
        log.info("accuracy of %s: %s %s", deployment, rows[0].status, rows[0].message)
    return rows[0].pk if rows else None
