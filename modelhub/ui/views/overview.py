import logging
from dataclasses import dataclass

from django.db import DatabaseError, connection
from django.db.models import Case, Count, IntegerField, OuterRef, Prefetch, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.http import JsonResponse
from django.shortcuts import render

from modelhub.alerts.models import Alert, AlertState, Severity
from modelhub.api.models import Scope
from modelhub.monitoring.models import CheckKind, CheckResult
from modelhub.registry.models import Alias, Model, ModelVersion
from modelhub.serving.models import Deployment, InferenceServer, ObservedState
from modelhub.ui.access import require_scope

log = logging.getLogger(__name__)

# Rows per section of the overview: the page costs the same with 10 servers or 10,000.
OVERVIEW_ROWS = 50


@dataclass
class Section:
    rows: list
    more: int  # rows not shown


def first_rows(queryset: QuerySet, limit: int) -> Section:
    """The first `limit` rows, and how many more there are (a COUNT only when there are more)."""
    rows = list(queryset[: limit + 1])
    if len(rows) <= limit:
        return Section(rows, 0)
    return Section(rows[:limit], queryset.count() - limit)


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


@require_scope(Scope.READ)
def overview(request):
    """Servers, deployments and models at a glance, each cut to OVERVIEW_ROWS rows."""
    deployments = first_rows(_deployments(), OVERVIEW_ROWS)
    attach_last_checks(deployments.rows)
    return render(
        request,
        "ui/overview.html",
        {
            "servers": first_rows(InferenceServer.objects.order_by("name"), OVERVIEW_ROWS),
            "deployments": deployments,
            "models": first_rows(_models(), OVERVIEW_ROWS),
            "firing_alerts": first_rows(_firing_alerts(), OVERVIEW_ROWS),
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
