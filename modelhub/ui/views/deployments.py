"""A deployment's page (one version on one server) and its status fragment, which the
page polls while a deploy or undeploy is in progress."""

from collections.abc import Iterable

from django.shortcuts import get_object_or_404, render

from modelhub.access.roles import Scope
from modelhub.serving.models import Deployment, DeploymentTransition, DesiredState, ObservedState
from modelhub.ui.access import require_scope
from modelhub.ui.views.overview import attach_last_checks

TRANSITION_ROWS = 50


def settled(deployment: Deployment) -> bool:
    """Whether the last request has an outcome: the reconciler has looked since it was made
    (checked_at after desired_at) and found the desired state, or failed trying."""
    looked = deployment.checked_at is not None and deployment.checked_at >= deployment.desired_at
    return looked and deployment.observed in (deployment.desired, ObservedState.FAILED)


def with_progress(deployments: Iterable[Deployment]) -> list[Deployment]:
    """The deployments, each marked `settled` for the status fragment."""
    deployments = list(deployments)
    for deployment in deployments:
        deployment.settled = settled(deployment)
    return deployments


def _deployment(pk: int) -> Deployment:
    return get_object_or_404(Deployment.objects.select_related("version__model", "server"), pk=pk)


def _transitions(deployment: Deployment, before: str | None) -> tuple[list[DeploymentTransition], int | None]:
    """A page of transitions, newest first, and the cursor of the next (older) page.

    Paged by id, not offset: a deployment's history only grows, and a cursor costs the
    same on page 1 and page 100."""
    rows = deployment.transitions.order_by("-id")
    if before and before.isdigit():
        rows = rows.filter(id__lt=int(before))
    page = list(rows[: TRANSITION_ROWS + 1])
    older = page[TRANSITION_ROWS - 1].pk if len(page) > TRANSITION_ROWS else None
    return page[:TRANSITION_ROWS], older


@require_scope(Scope.READ)
def deployment_detail(request, pk: int):
    [deployment] = with_progress([_deployment(pk)])
    attach_last_checks([deployment])
    transitions, older = _transitions(deployment, request.GET.get("before"))
    context = {
        "deployment": deployment,
        "version": deployment.version,
        "transitions": transitions,
        "older": older,
        "paged": bool(request.GET.get("before")),
        "wanted": deployment.desired == DesiredState.LOADED,
        "chart_target": f"deployment:{deployment.pk}",
    }
    return render(request, "ui/deployments/detail.html", context)


@require_scope(Scope.READ)
def deployment_status(request, pk: int):
    [deployment] = with_progress([_deployment(pk)])
    return render(request, "ui/deployments/status.html", {"deployment": deployment})
