"""Server pages: the list, one server's page (health, memory flags, deployments,
what Triton serves beside what ModelHub wants) and the admin's register, edit and delete.

Writes go through `serving.services`, as the API's do, so they are audited alike.
What Triton serves is asked in a fragment the page loads after it renders
(`server_served`): a hanging Triton delays that box by a few seconds, never the page.
"""

from collections import defaultdict
from dataclasses import dataclass

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, QuerySet
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from modelhub.access.roles import Scope
from modelhub.lib.urls import hide_credentials
from modelhub.monitoring.models import CheckKind, CheckResult
from modelhub.registry.services import InUse, NameTaken
from modelhub.serving.models import (
    Deployment,
    DesiredState,
    InferenceServer,
    ObservedState,
    parse_triton_model_name,
    triton_model_name,
)
from modelhub.serving.services import create_server, delete_server, update_server
from modelhub.serving.triton_client import TritonClient, TritonError
from modelhub.ui.access import require_scope, ui_actor
from modelhub.ui.forms.servers import ServerForm
from modelhub.ui.paging import keyset_page

SERVERS_PER_PAGE = 50
DEPLOYMENTS_PER_PAGE = 50
RESULTS_PER_PAGE = 20
# Deployments compared with what Triton serves, at most: the box stays readable and cheap.
SERVED_ROWS_MAX = 500
# Per Triton call of the served-vs-wanted box (two calls): an operator waits for it.
SERVED_CALL_TIMEOUT_S = 2.0
TRITON_READY = "READY"


# --- the list -----------------------------------------------------------------


def _hide_server_credentials(server: InferenceServer) -> None:
    """What the pages show of a server's URLs and last error (display only, never saved)."""
    server.shown_url = hide_credentials(server.base_url)
    server.shown_metrics_url = hide_credentials(server.metrics_url)
    server.last_error = hide_credentials(server.last_error)


def _deployment_counts(servers: list[InferenceServer]) -> dict[int, list[tuple[str, str]]]:
    """server id -> [(observed state, "3 loaded")] in ObservedState's order, in one GROUP BY query."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    rows = (
        Deployment.objects.filter(server__in=servers)
        .values_list("server_id", "observed")
        .annotate(n=Count("id"))
        .order_by()
    )
    for server_id, observed, n in rows:
        counts[server_id][observed] = n
    return {
        server_id: [(state, f"{by_state[state]} {state}") for state in ObservedState.values if state in by_state]
        for server_id, by_state in counts.items()
    }


@require_scope(Scope.READ)
def server_list(request):
    page = Paginator(InferenceServer.objects.order_by("name"), SERVERS_PER_PAGE).get_page(request.GET.get("page"))
    servers = list(page.object_list)
    counts = _deployment_counts(servers)
    for server in servers:
        _hide_server_credentials(server)
        server.deployment_counts = counts.get(server.pk, [])
    return render(request, "ui/servers/list.html", {"page": page, "servers": servers})


# --- one server -----------------------------------------------------------------


def _server_results(server: InferenceServer, kind: str) -> QuerySet:
    return CheckResult.objects.filter(kind=kind, server=server)


def _mib(size: float | None) -> float | None:
    return None if size is None else round(size / 2**20, 1)


@require_scope(Scope.READ)
def server_detail(request, name: str):
    server = get_object_or_404(InferenceServer, name=name)
    _hide_server_credentials(server)
    deployments = Paginator(
        Deployment.objects.filter(server=server)
        .select_related("version__model")
        .order_by("version__model__name", "-version__number"),
        DEPLOYMENTS_PER_PAGE,
    ).get_page(request.GET.get("page"))
    # Two lists on one page, each with its own cursor; a tampered cursor shows that list's newest rows.
    memory = keyset_page(
        request,
        _server_results(server, CheckKind.MEMORY).select_related("version__model"),
        size=RESULTS_PER_PAGE,
        prefix="memory_",
        strict=False,
    )
    health = keyset_page(
        request, _server_results(server, CheckKind.SERVER_HEALTH), size=RESULTS_PER_PAGE, prefix="health_", strict=False
    )
    for result in health.rows:
        result.message = hide_credentials(result.message)
    for deployment in deployments:
        deployment.last_error = hide_credentials(deployment.last_error)
    for result in memory.rows:
        result.mib_change = _mib(result.value)
        result.mib_load = _mib(result.details.get("load_delta_bytes"))
    return render(
        request,
        "ui/servers/detail.html",
        {
            "server": server,
            "health": health,
            "memory": memory,
            "deployments": deployments,
        },
    )


# --- what Triton serves beside what ModelHub wants --------------------------------


@dataclass(frozen=True)
class Served:
    state: str  # Triton's: READY, UNAVAILABLE, LOADING, UNLOADING…
    reason: str = ""


@dataclass
class ServedRow:
    model: str  # the registered model's name; Triton's own name for a model not ModelHub's
    version: str
    deployment: Deployment | None  # None: Triton serves it, ModelHub knows no deployment of it here
    triton_state: str
    reason: str
    diff: bool
    triton_name: str = ""  # what Triton calls it (<model>__v<n> for ModelHub's)


def triton_serves(server: InferenceServer) -> dict[tuple[str, str], Served]:
    """(Triton model name, version) -> what Triton says of it; version "" for a model-wide entry.

    The repository index gives state and reason for the models of the server's
    repository folder only; a model loaded with its files inside the load request is
    missing there, so the statistics (every ready version) fill in the rest.
    """
    client = TritonClient.for_server(server, timeout=SERVED_CALL_TIMEOUT_S)
    try:
        index = client.repository_index()
        stats = client.statistics().get("model_stats", [])
    finally:
        client.close()
    served = {
        (e.get("name", ""), str(e.get("version", ""))): Served(e.get("state", ""), e.get("reason", "")) for e in index
    }
    for entry in stats:
        served[entry.get("name", ""), str(entry.get("version", ""))] = Served(TRITON_READY)
    return served


def _compare(deployment: Deployment, served: dict[tuple[str, str], Served]) -> ServedRow:
    model, version = deployment.version.model.name, str(deployment.version.number)
    name = triton_model_name(model, deployment.version.number)
    triton = served.get((name, version)) or served.get((name, ""))
    serving = triton is not None and triton.state == TRITON_READY
    wanted = deployment.desired == DesiredState.LOADED
    reason = triton.reason if triton else ""
    if wanted and not serving:
        reason = reason or "Triton does not serve this version"
    elif serving and not wanted:
        reason = "Triton still serves this version; ModelHub wants it unloaded"
    return ServedRow(
        model=model,
        version=version,
        deployment=deployment,
        triton_state=triton.state if triton else "not served",
        reason=reason,
        diff=wanted != serving,
        triton_name=name,
    )


def _not_deployed(name: str, version: str, served: Served) -> ServedRow:
    """A row for what Triton serves and no deployment of this server wants."""
    parsed = parse_triton_model_name(name)
    if parsed is not None and str(parsed[1]) == version:
        # ModelHub's name: a version loaded here that no deployment of this server wants.
        reason = "served by Triton, but not a ModelHub deployment"
        return ServedRow(parsed[0], version, None, served.state, reason, True, triton_name=name)
    # Not ModelHub's naming: loaded by someone else; the reconciler leaves it alone.
    reason = "served by Triton under a name that is not ModelHub's: left alone"
    return ServedRow(name, version, None, served.state, reason, True, triton_name=name)


def compare_served(deployments: list[Deployment], served: dict[tuple[str, str], Served], *, complete: bool):
    """One row per deployment, plus what Triton serves that no deployment wants (only when
    `deployments` are all of the server's); disagreements first."""
    rows = [_compare(d, served) for d in deployments]
    if complete:
        known = {(r.triton_name, r.version) for r in rows}
        rows += [
            _not_deployed(name, version, s)
            for (name, version), s in sorted(served.items())
            if s.state == TRITON_READY and (name, version) not in known
        ]
    return sorted(rows, key=lambda r: not r.diff)


@require_scope(Scope.READ)
def server_served(request, name: str):
    """The served-vs-wanted box of the server page, as a fragment (the page polls it once)."""
    server = get_object_or_404(InferenceServer, name=name)
    deployments = list(
        Deployment.objects.filter(server=server)
        .select_related("version__model")
        .order_by("version__model__name", "-version__number")[: SERVED_ROWS_MAX + 1]
    )
    complete = len(deployments) <= SERVED_ROWS_MAX
    context = {"server": server, "truncated": not complete, "limit": SERVED_ROWS_MAX}
    try:
        served = triton_serves(server)
    except TritonError as exc:
        context["error"] = hide_credentials(str(exc))
    else:
        for deployment in deployments:
            deployment.last_error = hide_credentials(deployment.last_error)
        context["rows"] = compare_served(deployments[:SERVED_ROWS_MAX], served, complete=complete)
    return render(request, "ui/servers/served.html", context)


# --- register, edit, delete (admin) ---------------------------------------------


@require_scope(Scope.ADMIN)
def server_create(request):
    form = ServerForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            server = create_server(ui_actor(request), **form.cleaned_data)
        except NameTaken as exc:
            form.add_error("name", str(exc))
        except ValidationError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Server {server.name!r} registered; ModelHub checks it on its next pass.")
            return redirect("ui:server-detail", name=server.name)
    return render(request, "ui/servers/form.html", {"form": form, "server": None})


@require_scope(Scope.ADMIN)
def server_edit(request, name: str):
    server = get_object_or_404(InferenceServer, name=name)
    form = ServerForm.for_server(server, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        changes = form.changes(server)
        try:
            update_server(server, ui_actor(request), **changes)
        except NameTaken as exc:
            form.add_error("name", str(exc))
        except ValidationError as exc:
            form.add_service_error(exc)
        else:
            said = f"changed {', '.join(sorted(changes))}" if changes else "nothing changed"
            messages.success(request, f"Server {server.name!r} saved: {said}.")
            return redirect("ui:server-detail", name=server.name)
        server.refresh_from_db()  # the service set the refused values on it
    return render(request, "ui/servers/form.html", {"form": form, "server": server})


@require_scope(Scope.ADMIN)
@require_POST
def server_delete(request, name: str):
    server = get_object_or_404(InferenceServer, name=name)
    try:
        delete_server(server, ui_actor(request))
    except InUse as exc:
        messages.error(request, str(exc))
        return redirect("ui:server-detail", name=name)
    messages.success(request, f"Server {name!r} deleted.")
    return redirect("ui:server-list")
