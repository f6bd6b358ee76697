"""The one place where a deployment's observed state changes.

A change takes the deployment's row lock, compares, updates and writes a
DeploymentTransition row in one transaction, so two writers racing cannot
both record the same transition. Later issues (alerts on failed deploys) read those rows.
"""

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from modelhub.serving.models import Deployment, DeploymentTransition, ObservedState


def observe(deployment: Deployment, state: str, error: str = "", retry_at=None) -> bool:
    """Record that `deployment` is observed in `state` (retry_at: when a failed
    one may be tried again). Returns True if it changed; False also when the
    row was deleted meanwhile."""
    if state not in (ObservedState.FAILED, ObservedState.DRAINED):  # the two that say why
        error = ""
    now = timezone.now()
    with transaction.atomic():
        current = Deployment.objects.select_for_update().only("observed", "last_error").filter(pk=deployment.pk).first()
        if current is None:
            return False  # deleted meanwhile (the reconciler works from rows it read earlier)
        changed = current.observed != state or current.last_error != error
        updates = {"retry_at": retry_at, "checked_at": now}
        if changed:
            updates.update(observed=state, last_error=error, observed_at=now)
        Deployment.objects.filter(pk=deployment.pk).update(**updates)
        if changed:
            DeploymentTransition.objects.create(
                deployment_id=deployment.pk, from_state=current.observed, to_state=state, error=error
            )
    deployment.retry_at, deployment.checked_at = retry_at, now
    if changed:
        deployment.observed, deployment.last_error, deployment.observed_at = state, error, now
    return changed


def hold_off(deployments: Iterable[Deployment], retry_at) -> None:
    """Set the back-off of deployments about to be loaded, before the load.

    If the load kills its worker (out of memory, a hard time limit), nothing
    runs afterwards to record the failure; the back-off written here is what
    keeps the next pass from loading it again at once. The observed state
    stays as it is; the outcome of the load replaces the back-off.
    """
    deployments = list(deployments)
    Deployment.objects.filter(pk__in=[d.pk for d in deployments]).update(retry_at=retry_at)
    for deployment in deployments:
        deployment.retry_at = retry_at
