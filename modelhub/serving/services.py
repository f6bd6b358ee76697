"""Deploy and undeploy requests: write desired state, then wake the reconciler.

These never call Triton: the request commits desired state and returns; the
reconciler (a Celery task, enqueued on commit) does the slow part.
"""

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from modelhub.audit.actors import Actor
from modelhub.audit.log import record
from modelhub.registry.models import ModelVersion
from modelhub.serving.models import Deployment, DesiredState, InferenceServer


def servers_with_label(label: str) -> list[InferenceServer]:
    # JSON list containment works on Postgres; filter in Python to stay portable.
    return [s for s in InferenceServer.objects.filter(enabled=True) if label in (s.labels or [])]


def _set_desired(
    version: ModelVersion, servers: Iterable[InferenceServer], desired: str, actor: Actor
) -> list[Deployment]:
    from modelhub.serving.tasks import reconcile_server_task

    servers = list(servers)
    result = []
    with transaction.atomic():
        for server in servers:
            deployment, created = Deployment.objects.select_for_update().get_or_create(
                version=version, server=server, defaults={"desired": desired}
            )
            # A new request clears any back-off left by an earlier failed load.
            if created or deployment.desired != desired or deployment.retry_at is not None:
                deployment.desired = desired
                deployment.desired_at = timezone.now()
                deployment.retry_at = None
                deployment.save(update_fields=["desired", "desired_at", "retry_at"])
            record(actor, f"deployment.{'deploy' if desired == DesiredState.LOADED else 'undeploy'}", deployment)
            result.append(deployment)
        for server in servers:
            reconcile_server_task.delay_on_commit(server.pk)
    return result


def request_deploy(version: ModelVersion, servers: Iterable[InferenceServer], actor: Actor) -> list[Deployment]:
    return _set_desired(version, servers, DesiredState.LOADED, actor)


def request_undeploy(version: ModelVersion, servers: Iterable[InferenceServer], actor: Actor) -> list[Deployment]:
    return _set_desired(version, servers, DesiredState.UNLOADED, actor)
