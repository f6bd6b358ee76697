"""The one place where a deployment's observed state changes.

A change takes the deployment's row lock, compares, updates and writes a
DeploymentTransition row in one transaction, so two writers racing cannot
both record the same transition. Later issues (alerts on failed deploys) read those rows.
"""

from django.db import transaction
from django.utils import timezone

from modelhub.serving.models import Deployment, DeploymentTransition, ObservedState


def observe(deployment: Deployment, state: str, error: str = "", retry_at=None) -> bool:
    """Record that `deployment` is observed in `state`. Returns True if it changed."""
    if state != ObservedState.FAILED:
        error = ""
    now = timezone.now()
    with transaction.atomic():
        current = Deployment.objects.select_for_update().only("observed", "last_error").get(pk=deployment.pk)
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
