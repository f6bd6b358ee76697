"""Serving's write paths: servers, deploy and undeploy requests, and the deletes that
must know where versions run (the registry's own deletes know nothing of serving).

These never call Triton: a request commits desired state and returns; the
reconciler (a Celery task, enqueued on commit) does the slow part.
"""

from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.utils import timezone

from modelhub.audit.actors import Actor
from modelhub.audit.log import record
from modelhub.registry.models import Model, ModelVersion
from modelhub.registry.services import InUse, NameTaken, delete_model_rows, delete_version_rows
from modelhub.serving.backends import check_servable
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState
from modelhub.taskqueue import enqueue_on_commit


def servers_with_label(label: str, *, enabled_only: bool = True) -> list[InferenceServer]:
    # JSON list containment works on Postgres; filter in Python to stay portable.
    servers = InferenceServer.objects.filter(enabled=True) if enabled_only else InferenceServer.objects.all()
    return [s for s in servers if label in (s.labels or [])]


SERVER_FIELDS = {"name", "base_url", "metrics_url", "enabled", "labels", "backends", "model_repository"}


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
    if not changes:
        return server
    try:
        with transaction.atomic():
            # Only the fields asked for: the reconciler writes health fields (live, ready,
            # last_error, …) meanwhile, and a whole-row save would put stale ones back.
            server.save(update_fields=list(changes))
            if changed:
                record(actor, "inferenceserver.update", server, fields=changed)
    except IntegrityError:
        raise NameTaken(f"a server named {server.name!r} already exists") from None
    return server


def delete_server(server: InferenceServer, actor: Actor) -> None:
    """Forget a server. Refused (InUse) while any deployment on it is meant to be loaded:
    undeploy first, so that nothing stays loaded on a Triton nobody manages any more.
    Its other deployment rows (and their transitions) go with it."""
    with transaction.atomic():
        # Row lock: a concurrent deploy to this server waits for us, then finds it gone.
        InferenceServer.objects.select_for_update().get(pk=server.pk)
        deployments = _locked_deployments(server=server)
        wanted = [d for d in deployments if d.desired == DesiredState.LOADED]
        if wanted:
            raise InUse(
                f"server {server.name!r} has deployments meant to be loaded: "
                f"{_describe(wanted, server=False)}; undeploy them first"
            )
        record(actor, "inferenceserver.delete", server, deployments=len(deployments))
        Deployment.objects.filter(pk__in=[d.pk for d in deployments]).delete()
        server.delete()


def delete_model(model: Model, actor: Actor) -> None:
    """Delete a model with its versions, aliases, history and files.

    Refused (InUse) while any version is loaded or meant to be loaded on a
    server; its deployments that are undeployed are deleted with it.
    """
    with transaction.atomic():
        # The model row first (as uploads and alias moves lock it), then its deployments:
        # a concurrent deploy of this model waits for us, then finds no version.
        Model.objects.select_for_update().get(pk=model.pk)
        deployments = _locked_deployments(version__model=model)
        live = _live(deployments)
        if live:
            raise InUse(f"model {model.name!r} is deployed: {_describe(live)}; undeploy it first")
        Deployment.objects.filter(pk__in=[d.pk for d in deployments]).delete()
        delete_model_rows(model, actor)


def delete_version(version: ModelVersion, actor: Actor) -> None:
    """Delete one version with its schema and file.

    Refused (InUse) while it is loaded or meant to be loaded on a server, or
    while an alias points at it; its undeployed deployment rows go with it.
    """
    with transaction.atomic():
        Model.objects.select_for_update().get(pk=version.model_id)
        # The version row too: a concurrent deploy's new deployment row waits on it.
        ModelVersion.objects.select_for_update().get(pk=version.pk)
        deployments = _locked_deployments(version=version)
        live = _live(deployments)
        if live:
            raise InUse(f"{version} is deployed: {_describe(live, version=False)}; undeploy it first")
        Deployment.objects.filter(pk__in=[d.pk for d in deployments]).delete()
        delete_version_rows(version, actor)


def delete_deployment(deployment: Deployment, actor: Actor) -> None:
    """Drop a deployment row once it is neither wanted nor loaded (the admin's delete);
    deleting a loaded one would leave the model on Triton with nobody to unload it."""
    with transaction.atomic():
        current = _locked_deployments(pk=deployment.pk)
        if not current:
            return
        if _live(current):
            raise InUse(f"{_describe(current)} is still deployed; undeploy it first")
        record(actor, "deployment.delete", current[0])
        current[0].delete()


def _locked_deployments(**where) -> list[Deployment]:
    return list(
        Deployment.objects.select_for_update(of=("self",))
        .filter(**where)
        .select_related("version__model", "server")
        .order_by("pk")
    )


def _live(deployments: list[Deployment]) -> list[Deployment]:
    """Deployments loaded on Triton, or meant to be: deleting them would strand a model there."""
    return [d for d in deployments if d.desired == DesiredState.LOADED or d.observed == ObservedState.LOADED]


def _describe(deployments: list[Deployment], *, server: bool = True, version: bool = True, limit: int = 5) -> str:
    parts = []
    for d in deployments[:limit]:
        what = f"{d.version.model.name} v{d.version.number}" if version else ""
        where = f"on {d.server.name}" if server else ""
        parts.append(f"{' '.join(p for p in (what, where) if p)} (desired {d.desired}, observed {d.observed})")
    more = len(deployments) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def _set_desired(
    version: ModelVersion, servers: Iterable[InferenceServer], desired: str, actor: Actor
) -> list[Deployment]:
    from modelhub.serving.tasks import reconcile_server_task, reconcile_servers_task

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
        # Several servers (a label, a fleet): one task reconciles them all at once, so the
        # fleet is loaded in the time of its slowest server, whatever the worker count.
        if len(servers) > 1:
            calls = [(reconcile_servers_task, [server.pk for server in servers])]
        else:
            calls = [(reconcile_server_task, server.pk) for server in servers]
        for task, target in calls:
            # A broker that is down does not undo the request: the rows stand and the
            # periodic reconcile loads them; the caller is told (TaskQueueUnavailable).
            enqueue_on_commit(
                task,
                target,
                recorded=f"the {'deploy' if desired == DesiredState.LOADED else 'undeploy'} request",
                picked_up_by="the reconciler's periodic pass",
            )
    return result


def request_deploy(version: ModelVersion, servers: Iterable[InferenceServer], actor: Actor) -> list[Deployment]:
    """Raises BackendMissing, writing nothing, if a server declares backends that cannot serve `version`."""
    servers = list(servers)
    check_servable(version, servers)
    return _set_desired(version, servers, DesiredState.LOADED, actor)


def request_undeploy(version: ModelVersion, servers: Iterable[InferenceServer], actor: Actor) -> list[Deployment]:
    return _set_desired(version, servers, DesiredState.UNLOADED, actor)
