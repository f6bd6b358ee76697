"""The overview: what is broken, since when, and what changed, in one glance.

Every section is bounded (OVERVIEW_ROWS, RECENT_CHANGES), so the page costs the same
queries with 10 servers or 10,000.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError, connection
from django.db.models import Case, Count, IntegerField, OuterRef, Prefetch, Q, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse

from modelhub.access.roles import Scope
from modelhub.alerts.models import Alert, AlertState, Severity
from modelhub.audit.models import AuditEvent
from modelhub.monitoring.models import CheckKind, CheckResult
from modelhub.registry.models import Alias, AliasMove, Model, ModelVersion
from modelhub.serving.models import Deployment, DeploymentTransition, InferenceServer, ObservedState
from modelhub.ui.access import require_scope
from modelhub.ui.helpers import first_rows

log = logging.getLogger(__name__)

# Rows per section of the overview: the page costs the same with 10 servers or 10,000.
OVERVIEW_ROWS = 50
# Entries of "recent changes": deploy requests, observed transitions and alias moves together.
RECENT_CHANGES = 15


def _models():
    versions = ModelVersion.objects.filter(model=OuterRef("pk")).order_by().values("model")
    return Model.objects.annotate(
        # A subquery per shown model, not a join over every version of every model.
        version_count=Coalesce(
            Subquery(versions.annotate(n=Count("pk")).values("n"), output_field=IntegerField()), Value(0)
        ),
    ).prefetch_related(Prefetch("aliases", queryset=Alias.objects.select_related("version").order_by("name")))


def _deployments():
    # Failed deployments first: those are what an operator opens the page for.
    failed_first = Case(When(observed=ObservedState.FAILED, then=Value(0)), default=Value(1))
    return Deployment.objects.select_related("version__model", "server").order_by(
        failed_first, "server__name", "version__model__name", "-version__number"
    )


# The checks whose last result the overview shows for each deployment, in this order.
DEPLOYMENT_CHECKS = (CheckKind.MODEL_READY, CheckKind.SCHEMA, CheckKind.LATENCY, CheckKind.STATS, CheckKind.ACCURACY)


def attach_last_checks(deployments: list) -> None:
    """Give each deployment `last_checks`: its latest result of each kind in DEPLOYMENT_CHECKS.

    Two queries for any number of rows: the ids (one subquery per kind and row, each the
    top of the (kind, deployment, -created_at) index), then the results themselves.
    """
    for deployment in deployments:
        deployment.last_checks = []
    if not deployments:
        return
    latest = {
        f"last_{kind}": Subquery(
            CheckResult.objects.filter(deployment=OuterRef("pk"), kind=kind)
            .order_by("-created_at", "-id")
            .values("id")[:1]
        )
        for kind in DEPLOYMENT_CHECKS
    }
    ids = Deployment.objects.filter(pk__in=[d.pk for d in deployments]).annotate(**latest).values("pk", *latest)
    by_deployment = {row.pop("pk"): row for row in ids}
    results = CheckResult.objects.in_bulk([i for row in by_deployment.values() for i in row.values() if i])
    for deployment in deployments:
        row = by_deployment.get(deployment.pk, {})
        found = [row.get(f"last_{kind}") for kind in DEPLOYMENT_CHECKS]
        deployment.last_checks = [results[pk] for pk in found if pk in results]


def _firing_alerts():
    # Critical first, then the longest-firing: the oldest breach is the one people forgot.
    critical_first = Case(When(rule__severity=Severity.CRITICAL, then=Value(0)), default=Value(1))
    return (
        Alert.objects.filter(state=AlertState.FIRING)
        .select_related("rule", "acknowledged_by")
        .order_by(critical_first, "since", "id")
    )


def _server_counts() -> dict:
    return InferenceServer.objects.aggregate(
        total=Count("pk"),
        up=Count("pk", filter=Q(live=True)),
        down=Count("pk", filter=Q(live=False)),
        unchecked=Count("pk", filter=Q(live__isnull=True)),
    )


def _deployment_counts() -> dict:
    counts = dict(Deployment.objects.order_by().values_list("observed").annotate(n=Count("pk")))
    # Every state, in the lifecycle's order, zero included: an operator reads "0 failed" too.
    return {state: counts.get(state, 0) for state in ObservedState.values}


def _alert_counts() -> dict:
    firing = Alert.objects.filter(state=AlertState.FIRING).order_by()
    counts = dict(firing.values_list("rule__severity").annotate(n=Count("pk")))
    return {severity: counts.get(severity, 0) for severity in reversed(Severity.values)}


@dataclass
class Change:
    """One line of "recent changes": who changed what, when, from what to what."""

    at: datetime
    who: str
    what: str
    subject: str
    url: str
    before: str = ""
    after: str = ""
    error: str = ""


def _deploy_requests(limit: int) -> list[Change]:
    # The request (who asked) is in the audit log; the deployment may since have been deleted.
    events = AuditEvent.objects.filter(
        action__in=("deployment.deploy", "deployment.undeploy"), object_type="serving.deployment"
    )[:limit]
    return [
        Change(
            at=e.created_at,
            who=e.actor,
            what="deploy requested" if e.action == "deployment.deploy" else "undeploy requested",
            subject=e.object_repr,
            url=reverse("ui:deployment-detail", args=[int(e.object_id)]),
        )
        for e in events
    ]


def _transitions(limit: int) -> list[Change]:
    rows = DeploymentTransition.objects.select_related("deployment__version__model", "deployment__server")
    return [
        Change(
            at=t.created_at,
            who="reconciler",
            what="observed",
            subject=str(t.deployment),
            url=reverse("ui:deployment-detail", args=[t.deployment_id]),
            before=t.from_state,
            after=t.to_state,
            error=t.error,
        )
        for t in rows[:limit]
    ]


def _version_label(version: ModelVersion | None) -> str:
    return f"v{version.number}" if version is not None else "none"


def _alias_moves(limit: int) -> list[Change]:
    rows = AliasMove.objects.select_related("model", "from_version", "to_version")
    return [
        Change(
            at=m.created_at,
            who=m.moved_by,
            what="alias moved",
            subject=f"{m.model.name}@{m.alias}",
            url=reverse("ui:model-detail", args=[m.model.name]),
            before=_version_label(m.from_version),
            after=_version_label(m.to_version),
        )
        for m in rows[:limit]
    ]


def recent_changes(limit: int) -> list[Change]:
    """The newest `limit` changes of the three kinds: three bounded queries, merged here."""
    changes = _deploy_requests(limit) + _transitions(limit) + _alias_moves(limit)
    return sorted(changes, key=lambda c: c.at, reverse=True)[:limit]


@require_scope(Scope.READ)
def overview(request):
    """Counts that link on, then what is firing, failing and changing, then servers and models."""
    deployments = first_rows(_deployments(), OVERVIEW_ROWS, count=True)
    attach_last_checks(deployments.rows)
    return render(
        request,
        "ui/overview.html",
        {
            "server_counts": _server_counts(),
            "deployment_counts": _deployment_counts(),
            "alert_counts": _alert_counts(),
            "servers": first_rows(InferenceServer.objects.order_by("name"), OVERVIEW_ROWS, count=True),
            "deployments": deployments,
            "models": first_rows(_models(), OVERVIEW_ROWS, count=True),
            "firing_alerts": first_rows(_firing_alerts(), OVERVIEW_ROWS, count=True),
            "recent_changes": recent_changes(RECENT_CHANGES),
        },
    )


def healthz(request):
    """Liveness for load balancers and container health checks: the database answers.

    Anyone may call it, so the answer names no host, user or database: those go to the log.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        log.exception("healthz: the database does not answer")
        return JsonResponse({"status": "error", "database": "database unavailable"}, status=503)
    return JsonResponse({"status": "ok"})
