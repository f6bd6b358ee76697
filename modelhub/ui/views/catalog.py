"""The models pages: the searchable list, one model's page, and moving its aliases
(promote, gated promote, roll back) and running their canaries (start, weight, promote,
abort) through the registry's and monitoring's services."""

from functools import partial

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Case, Count, Exists, IntegerField, OuterRef, Prefetch, Q, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from modelhub.access.roles import Scope
from modelhub.alerts.models import Alert, AlertState
from modelhub.monitoring.gates import GateFailed, promote_with_gates
from modelhub.monitoring.models import CheckKind, CheckResult
from modelhub.registry.models import Alias, AliasMove, Model, ModelVersion, alias_name_validator
from modelhub.registry.services import (
    CanaryConflict,
    abort_canary,
    move_alias,
    promote_canary,
    set_canary_weight,
    start_canary,
)
from modelhub.serving.models import Deployment, ObservedState
from modelhub.ui.access import can, require_scope, ui_actor
from modelhub.ui.forms.catalog import AliasMoveForm, CanaryForm, ModelFilterForm, PromoteForm, RollbackForm
from modelhub.ui.helpers import first_rows, form_errors, next_url, refusal_text
from modelhub.ui.views.overview import attach_last_checks

MODELS_PER_PAGE = 50
VERSIONS_PER_PAGE = 50
# The model page's sections are cut here: the page costs the same for a model with 5
# versions or 5,000, and a long history is the REST API's to page through.
ALIAS_HISTORY_ROWS = 25
DEPLOYMENT_ROWS = 100
ALERT_ROWS = 50
# The deployment states the list counts per model (unloaded ones are not news).
COUNTED_STATES = (ObservedState.LOADED, ObservedState.PENDING, ObservedState.FAILED)


# --- the list ---------------------------------------------------------------------------------


def _count(queryset, group: str):
    """COUNT of `queryset` per outer model row, as a subquery (0 when none)."""
    counted = queryset.order_by().values(group).annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def models_for_list():
    """Models with what a list row shows, in a fixed number of queries for any page."""
    deployments = Deployment.objects.filter(version__model=OuterRef("pk"))
    per_state = {
        f"{state}_count": _count(deployments.filter(observed=state), "version__model") for state in COUNTED_STATES
    }
    return Model.objects.annotate(
        version_count=_count(ModelVersion.objects.filter(model=OuterRef("pk")), "model"),
        firing_count=_count(Alert.objects.filter(model=OuterRef("pk"), state=AlertState.FIRING), "model"),
        **per_state,
    ).prefetch_related("owners", Prefetch("aliases", queryset=Alias.objects.select_related("version").order_by("name")))


def filter_models(queryset, filters: dict):
    """Apply the list's cleaned filters (an empty value filters nothing)."""
    if filters.get("q"):
        queryset = queryset.filter(Q(name__icontains=filters["q"]) | Q(description__icontains=filters["q"]))
    if filters.get("task"):
        queryset = queryset.filter(task_kind=filters["task"])
    if filters.get("owner"):
        queryset = queryset.filter(owners=filters["owner"])
    if filters.get("alias"):
        queryset = queryset.filter(Exists(Alias.objects.filter(model=OuterRef("pk"), name=filters["alias"])))
    if filters.get("state"):
        in_state = Deployment.objects.filter(version__model=OuterRef("pk"), observed=filters["state"])
        queryset = queryset.filter(Exists(in_state))
    return queryset


@require_scope(Scope.READ)
def model_list(request):
    """Registered models, searchable and filtered; a bad filter is a 400 that names it."""
    form = ModelFilterForm(request.GET)
    context = {"form": form, "page": None, "filtered": False}
    if not form.is_valid():
        # Listing everything under a filter the person believes applied would mislead.
        return render(request, "ui/catalog/model_list.html", context, status=400)
    models = filter_models(models_for_list(), form.cleaned_data).order_by("name")
    context["page"] = Paginator(models, MODELS_PER_PAGE).get_page(request.GET.get("page"))
    context["filtered"] = form.filters_applied()
    return render(request, "ui/catalog/model_list.html", context)


# --- one model ----------------------------------------------------------------------------------


def _versions(model: Model):
    latest_accuracy = CheckResult.objects.filter(kind=CheckKind.ACCURACY, version=OuterRef("pk")).order_by(
        "-created_at", "-id"
    )
    return (
        model.versions.annotate(
            accuracy_value=Subquery(latest_accuracy.values("value")[:1]),
            accuracy_status=Subquery(latest_accuracy.values("status")[:1]),
            accuracy_at=Subquery(latest_accuracy.values("created_at")[:1]),
        )
        .prefetch_related(Prefetch("deployments", queryset=Deployment.objects.select_related("server")))
        .order_by("-number")
    )


def _aliases(model: Model) -> list[Alias]:
    """The model's aliases, each with `rollback_to`: the version number its last move came from."""
    last_move = AliasMove.objects.filter(model=model, alias=OuterRef("name")).order_by("-created_at", "-id")
    return list(
        model.aliases.select_related("version", "canary_version")
        .annotate(rollback_to=Subquery(last_move.values("from_version__number")[:1]))
        .order_by("name")
    )


def _aliases_by_version(aliases: list[Alias]) -> dict[int, list[str]]:
    by_version: dict[int, list[str]] = {}
    for alias in aliases:
        by_version.setdefault(alias.version_id, []).append(alias.name)
    return by_version


def _deployments(model: Model):
    # Failed first: those are what an operator opens the page for.
    failed_first = Case(When(observed=ObservedState.FAILED, then=Value(0)), default=Value(1))
    return (
        Deployment.objects.filter(version__model=model)
        .select_related("server", "version")
        .order_by(failed_first, "server__name", "-version__number")
    )


def _firing_alerts(model: Model):
    return (
        Alert.objects.filter(model=model, state=AlertState.FIRING)
        .select_related("rule", "acknowledged_by")
        .order_by("since", "id")
    )


@require_scope(Scope.READ)
def model_detail(request, name: str):
    """One model: what it is, its versions, aliases and their moves, where it runs, what fires."""
    model = get_object_or_404(Model.objects.prefetch_related("owners"), name=name)
    aliases = _aliases(model)
    versions = Paginator(_versions(model), VERSIONS_PER_PAGE).get_page(request.GET.get("page"))
    on_version = _aliases_by_version(aliases)
    for version in versions:
        version.alias_names = on_version.get(version.pk, [])
    deployments = first_rows(_deployments(model), DEPLOYMENT_ROWS)
    attach_last_checks(deployments.rows)
    context = {
        "model": model,
        "versions": versions,
        "aliases": aliases,
        "alias_moves": first_rows(
            AliasMove.objects.filter(model=model).select_related("from_version", "to_version"), ALIAS_HISTORY_ROWS
        ),
        "deployments": deployments,
        "firing_alerts": first_rows(_firing_alerts(model), ALERT_ROWS),
    }
    if can(request.user, Scope.DEPLOY):
        context["promote_form"] = PromoteForm(model=model)
        # The canary forms' version choices: one query for every alias row.
        context["version_numbers"] = list(model.versions.order_by("-number").values_list("number", flat=True))
    return render(request, "ui/catalog/model_detail.html", context)


# --- moving aliases -----------------------------------------------------------------------------


def _back_to(request, model: Model) -> str:
    """Where to go after an alias action: the page that posted it (`next`), else the model's page."""
    return next_url(request, reverse("ui:model-detail", kwargs={"name": model.name}))


def _move(request, model: Model, alias: str, version: ModelVersion, gated: bool) -> None:
    """Move `alias` to `version` (past the gates if `gated`) and say what happened."""
    current = Alias.objects.filter(model=model, name=alias).values_list("version__number", flat=True).first()
    if current == version.number:
        # Nothing moves, so there is nothing to gate or record (the API answers the same way).
        messages.info(request, f"{model.name}@{alias} already points at v{version.number}: nothing moved")
        return
    try:
        if gated:
            _, report = promote_with_gates(model, alias, version, ui_actor(request))
        else:
            move_alias(model, alias, version, ui_actor(request))
    except GateFailed as refusal:
        messages.error(request, str(refusal))
        return
    except (ValueError, ValidationError) as refusal:
        messages.error(request, f"{model.name}@{alias} was not moved: {refusal_text(refusal)}")
        return
    was = f" (was v{current})" if current else " (new alias)"
    gates = f", past the gates {', '.join(g.name for g in report.gates)}" if gated else ""
    messages.success(request, f"{model.name}@{alias} now points at v{version.number}{was}{gates}")


@require_scope(Scope.DEPLOY)
@require_POST
def alias_move(request, name: str, alias: str):
    """Point the alias the URL names at the posted version (the version page's promote buttons)."""
    model = get_object_or_404(Model, name=name)
    form = AliasMoveForm(request.POST, model=model)
    try:
        alias_name_validator(alias)
    except ValidationError as error:
        form.add_error(None, f"alias: {' '.join(error.messages)}")
    if form.is_valid():
        _move(request, model, alias, form.cleaned_data["version"], form.cleaned_data["gate"])
    else:
        messages.error(request, f"{model.name}@{alias} was not moved: {form_errors(form)}")
    return redirect(_back_to(request, model))


@require_scope(Scope.DEPLOY)
@require_POST
def alias_promote(request, name: str):
    """The model page's promote form: any alias, existing or new, typed into the form."""
    model = get_object_or_404(Model, name=name)
    form = PromoteForm(request.POST, model=model)
    if form.is_valid():
        data = form.cleaned_data
        _move(request, model, data["alias"], data["version"], data["gate"])
    else:
        messages.error(request, f"Nothing was promoted: {form_errors(form)}")
    return redirect(_back_to(request, model))


def _rollback_target(model: Model, alias: str, offered: int) -> ModelVersion:
    """The version `alias` pointed at before its last move; ValueError says why there is none."""
    last = AliasMove.objects.filter(model=model, alias=alias).select_related("from_version").first()
    if last is None:
        raise ValueError(f"{model.name}@{alias} has never moved: nothing to roll back to")
    if last.from_version is None:
        raise ValueError(
            f"{model.name}@{alias} pointed at no version before its last move (it was created then, or that "
            "version has been deleted): nothing to roll back to"
        )
    if last.from_version.number != offered:
        raise ValueError(
            f"{model.name}@{alias} moved since this page was shown: its last move came from "
            f"v{last.from_version.number}, not v{offered}; reload the page and check before rolling back"
        )
    return last.from_version


@require_scope(Scope.DEPLOY)
@require_POST
def alias_rollback(request, name: str, alias: str):
    """Move the alias back to where it pointed before its last move (a move like any other, audited)."""
    model = get_object_or_404(Model, name=name)
    form = RollbackForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"{model.name}@{alias} was not rolled back: {form_errors(form)}")
        return redirect(_back_to(request, model))
    current = Alias.objects.filter(model=model, name=alias).values_list("version__number", flat=True).first()
    try:
        target = _rollback_target(model, alias, form.cleaned_data["to_version"])
        move_alias(model, alias, target, ui_actor(request), rollback=True)
    except (ValueError, ValidationError) as refusal:
        messages.error(request, refusal_text(refusal))
        return redirect(_back_to(request, model))
    was = f"v{current}" if current else "no version"
    messages.success(request, f"{model.name}@{alias} rolled back to v{target.number} (was {was})")
    return redirect(_back_to(request, model))


# --- canaries -----------------------------------------------------------------------------------


def _canary_change(request, model: Model, alias: str, change, success) -> None:
    """Run `change(actor)`, one canary transition, and say what happened: `success(alias row)`, or the
    service's refusal (which names what was wrong)."""
    try:
        changed = change(ui_actor(request))
    except (CanaryConflict, Alias.DoesNotExist, ValidationError) as refusal:
        messages.error(request, f"{model.name}@{alias}: {refusal_text(refusal)}")
        return
    messages.success(request, success(changed))


@require_scope(Scope.DEPLOY)
@require_POST
def alias_canary(request, name: str, alias: str):
    """Start a canary on the alias, or change the weight of the running one (its version posted again)."""
    model = get_object_or_404(Model, name=name)
    form = CanaryForm(request.POST, model=model)
    if not form.is_valid():
        messages.error(request, f"{model.name}@{alias}: no canary change: {form_errors(form)}")
        return redirect(_back_to(request, model))
    version, weight = form.cleaned_data["version"], form.cleaned_data["weight"]
    running = Alias.objects.filter(model=model, name=alias).values_list("canary_version_id", flat=True).first()
    if running == version.pk:
        change = partial(set_canary_weight, model, alias, weight)
    else:
        change = partial(start_canary, model, alias, version, weight)
    _canary_change(
        request, model, alias, change, lambda a: f"{model.name}@{alias}: canary v{version.number} gets {weight} %"
    )
    return redirect(_back_to(request, model))


@require_scope(Scope.DEPLOY)
@require_POST
def alias_canary_promote(request, name: str, alias: str):
    """Move the alias to its canary (an alias move like any other) and end the canary."""
    model = get_object_or_404(Model, name=name)
    _canary_change(
        request,
        model,
        alias,
        partial(promote_canary, model, alias),
        lambda a: f"{model.name}@{alias} promoted its canary: it now points at v{a.version.number}",
    )
    return redirect(_back_to(request, model))


@require_scope(Scope.DEPLOY)
@require_POST
def alias_canary_abort(request, name: str, alias: str):
    """End the canary: all the alias's traffic goes back to its version."""
    model = get_object_or_404(Model, name=name)
    _canary_change(
        request,
        model,
        alias,
        partial(abort_canary, model, alias),
        lambda a: f"{model.name}@{alias}: canary aborted, v{a.version.number} gets all the traffic",
    )
    return redirect(_back_to(request, model))
