"""Deploy and undeploy requests: write desired state, then wake the reconciler.

These never call Triton: the request commits desired state and returns; the
reconciler (a Celery task, enqueued on commit) does the slow part.
"""

from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.utils import timezone

from modelhub.audit.actors import Actor
from modelhub.audit.log import record
from modelhub.registry.models import ModelVersion
from modelhub.registry.services import NameTaken
from modelhub.serving.models import Deployment, DesiredState, InferenceServer


def servers_with_label(label: str, *, enabled_only: bool = True) -> list[InferenceServer]:
    # JSON list containment works on Postgres; filter in Python to stay portable.
    servers = InferenceServer.objects.filter(enabled=True) if enabled_only else InferenceServer.objects.all()
    return [s for s in servers if label in (s.labels or [])]


SERVER_FIELDS = {"name", "base_url", "metrics_url", "enabled", "labels", "backends"}


def create_server(actor: Actor, **fields) -> InferenceServer:
    server = InferenceServer(**fields)
    server.full_clean(validate_unique=False)
    try:
        with transaction.atomic():
            server.save()
            record(actor, "inferenceserver.create", server)
    except IntegrityError:  # the name is taken, perhaps by a racing request
        raise NameTaken(f"a server named {server.name!r} already exists") from None
    return server


def update_server(server: InferenceServer, actor: Actor, **changes) -> InferenceServer:
    """Change what ModelHub knows of a server; the reconciler picks it up on its next pass."""
    unknown = set(changes) - SERVER_FIELDS
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))} of a server")
    changed = sorted(k for k, v in changes.items() if getattr(server, k) != v)
    for key, value in changes.items():
        setattr(server, key, value)
    server.full_clean(validate_unique=False)
    try:
        with transaction.atomic():
            server.save()
            if changed:
                record(actor, "inferenceserver.update", server, fields=changed)
    except IntegrityError:
        raise NameTaken(f"a server named {server.name!r} already exists") from None
    return server


def _set_desired(
    version: ModelVersion, servers: Iterable[InferenceServer], desired: str, actor: Actor
) -> list[Deployment]:
    from modelhub.serving.tasks import reconcile_server_task

    servers = list(servers)
    result = []
    with transaction.atomic():
        for server in servers:
            deployment, _ = Deployment.objects.select_for_update().get_or_create(
                version=version, server=server, defaults={"desired": desired}
            )
            # Every request is stamped (a caller knows the reconciler has looked
            # since when checked_at > desired_at) and clears any back-off left
            # by an earlier failed load, so "deploy again" means "try now".
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
