"""Checks: the results' history, one result, "run now", and beat's schedules."""

import json
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_celery_beat.models import PeriodicTask

from modelhub.access.roles import Scope
from modelhub.alerts.links import target_path
from modelhub.monitoring.models import CheckResult, Status
from modelhub.monitoring.run_now import CannotCheck, check_deployment_now, check_server_now
from modelhub.monitoring.schedules import every_seconds, update_schedule
from modelhub.serving.models import Deployment, InferenceServer
from modelhub.ui.access import can, require_scope, ui_actor
from modelhub.ui.forms.checks import CheckFilterForm, RunNowForm, ScheduleForm
from modelhub.ui.helpers import form_errors, next_url
from modelhub.ui.paging import BadCursor, keyset_page

PAGE_ROWS = 50
# The servers offered by the checks page's "run now" form: a select stays usable up to this.
RUN_NOW_SERVERS = 200


# --- history ------------------------------------------------------------------------------


def target_url(result: CheckResult) -> str | None:
    """The page of what was checked: the deployment, else the version, else the server."""
    return target_path(result)


def _results():
    return CheckResult.objects.select_related("server", "version__model")


def _run_now_servers(request) -> list[InferenceServer]:
    if not can(request.user, Scope.DEPLOY):
        return []  # no form, no query
    return list(InferenceServer.objects.filter(enabled=True).order_by("name")[:RUN_NOW_SERVERS])


@require_scope(Scope.READ)
def check_list(request):
    """Results newest first, filtered; a bad filter or cursor is said on the page, with no rows."""
    filters = CheckFilterForm(request.GET)
    page, problem = None, None
    if filters.is_valid():
        try:
            page = keyset_page(request, filters.filter(_results()), size=PAGE_ROWS)
        except BadCursor as exc:
            problem = str(exc)
    if page is not None:
        for row in page.rows:
            row.target_url = target_url(row)
    context = {
        "filters": filters,
        "page": page,
        "problem": problem,
        "older_url": f"?{page.older}" if page and page.older else None,
        "newer_url": f"?{page.newer}" if page and page.newer else None,
        "first_url": f"?{page.newest}" if page and not page.is_first else None,
        "servers": _run_now_servers(request),
    }
    return render(request, "ui/checks/list.html", context, status=200 if page is not None else 400)


@require_scope(Scope.READ)
def check_detail(request, pk: int):
    result = get_object_or_404(_results(), pk=pk)
    context = {
        "result": result,
        "target_url": target_url(result),
        "details": json.dumps(result.details, indent=2, sort_keys=True, ensure_ascii=False),
        # record() files a pass's results under "<pass id>:<kind>:<target>".
        "pass_id": result.dedupe_key.rsplit(":", 2)[0] if result.dedupe_key else None,
        "history_url": _history_url(result),
    }
    return render(request, "ui/checks/detail.html", context)


def _history_url(result: CheckResult) -> str:
    """The list filtered to this check of this target: what it said before and after."""
    params = {"kind": result.kind}
    if result.deployment_id:
        params["deployment"] = result.deployment_id
    elif result.server_id and not result.version_id:
        params["server"] = result.server.name
    elif result.version_id:
        params["model"] = result.version.model.name
    return f"{reverse('ui:check-list')}?{urlencode(params)}"


# --- run now ----------------------------------------------------------------------------


@require_POST
@require_scope(Scope.DEPLOY)  # the API's run-now scope
def run_now(request):
    """Run a deployment's or a server's checks in the request, like the API's run-now; say the outcome."""
    form = RunNowForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Nothing was checked: {form_errors(form)}")
        return _redirect_after_run(request, None)
    target = form.cleaned_data["target"]
    try:
        results = _run_checks(target, ui_actor(request))
    except CannotCheck as exc:
        messages.error(request, f"Nothing was checked: {exc}")
        return _redirect_after_run(request, target)
    _say_outcome(request, target, results)
    return _redirect_after_run(request, target)


def _run_checks(target: Deployment | InferenceServer, actor) -> list[CheckResult]:
    """The API's run-now: the same checks, recorded and audited alike."""
    if isinstance(target, Deployment):
        return check_deployment_now(target, actor)
    return check_server_now(target, actor)


def _say_outcome(request, target, results: list[CheckResult]) -> None:
    statuses = {r.status for r in results}
    level = messages.ERROR if Status.FAIL in statuses else messages.WARNING if Status.WARN in statuses else None
    parts = [f"{r.get_kind_display()} {r.status}" + (f" ({r.message})" if r.message else "") for r in results]
    text = f"Checked {target}: " + ("; ".join(parts) or "no results")
    messages.add_message(request, level or messages.SUCCESS, text)


def _redirect_after_run(request, target) -> HttpResponseRedirect:
    """To `next` when it is a page of this site, else the target's page, else the checks."""
    if isinstance(target, Deployment):
        default = reverse("ui:deployment-detail", kwargs={"pk": target.pk})
    elif isinstance(target, InferenceServer):
        default = reverse("ui:server-detail", kwargs={"name": target.name})
    else:
        default = reverse("ui:check-list")
    return HttpResponseRedirect(next_url(request, default))


# --- schedules --------------------------------------------------------------------------


@require_scope(Scope.READ)
def schedule_list(request):
    tasks = list(PeriodicTask.objects.select_related("interval", "crontab", "solar", "clocked").order_by("name"))
    for task in tasks:
        task.every_s = every_seconds(task)
    return render(request, "ui/checks/schedules.html", {"tasks": tasks})


@require_scope(Scope.ADMIN)
def schedule_edit(request, pk: int):
    """GET: the form; POST: the new interval and enabled, through the audited service."""
    task = get_object_or_404(PeriodicTask.objects.select_related("interval", "crontab"), pk=pk)
    has_interval = task.interval_id is not None
    if request.method != "POST":
        form = ScheduleForm(
            initial={"every_s": every_seconds(task), "enabled": task.enabled}, has_interval=has_interval
        )
        return render(request, "ui/checks/schedule_edit.html", {"task": task, "form": form})
    form = ScheduleForm(request.POST, has_interval=has_interval)
    if form.is_valid():
        try:
            update_schedule(
                task, ui_actor(request), every_s=form.cleaned_data.get("every_s"), enabled=form.cleaned_data["enabled"]
            )
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Schedule {task.name!r} saved.")
            return HttpResponseRedirect(reverse("ui:schedule-list"))
    return render(request, "ui/checks/schedule_edit.html", {"task": task, "form": form}, status=400)
