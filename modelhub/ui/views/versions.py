"""A version's page, its comparison with another, its artifact, and the actions on it
(deploy, undeploy, accuracy run and its progress; promoting posts to the catalog's alias
views). Writes go through the same service functions as the REST API, with the same rules
and error texts."""

import difflib
import json
from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.db.models import Prefetch
from django.http import FileResponse, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from modelhub.access.roles import Scope
from modelhub.audit.log import record as audit
from modelhub.audit.models import AuditEvent
from modelhub.monitoring.accuracy_tasks import run_accuracy
from modelhub.monitoring.models import CheckKind, CheckResult
from modelhub.registry.models import Alias, EvaluationSet, ModelVersion, TensorSpec
from modelhub.registry.storage import StorageUnavailable
from modelhub.registry.triton_config import config_pbtxt
from modelhub.serving.backends import BackendMissing, cannot_serve
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState
from modelhub.serving.reconciler import deployable_config
from modelhub.serving.services import request_deploy, request_undeploy
from modelhub.taskqueue import TaskQueueUnavailable, enqueue_on_commit
from modelhub.ui.access import require_scope, ui_actor
from modelhub.ui.forms.versions import DeployForm, UndeployForm, other_version
from modelhub.ui.helpers import form_errors
from modelhub.ui.views.deployments import with_progress

ACCURACY_ROWS = 20  # newest accuracy results on the version page
COMPARE_CHOICES = 200  # versions offered in the compare form


def _version(name: str, number: int) -> ModelVersion:
    versions = ModelVersion.objects.select_related("model", "created_by").prefetch_related(
        Prefetch("tensors", queryset=TensorSpec.objects.order_by("direction", "position")),
        Prefetch("aliases", queryset=Alias.objects.order_by("name")),
    )
    return get_object_or_404(versions, model__name=name, number=number)


def triton_config_text(version: ModelVersion) -> str:
    """The config.pbtxt the reconciler sends for this version alone, in Triton's text form.

    Built by the reconciler's own function for a server with the version's backend (one
    lacking onnxruntime gets ModelHub's python runner instead: see the deployment's server).
    """
    config = deployable_config(InferenceServer(), version, [version.number])
    return config_pbtxt(config)


def _version_url(version: ModelVersion) -> str:
    return reverse("ui:version-detail", args=[version.model.name, version.number])


def _loaded_deployments(version: ModelVersion):
    """Where an accuracy run can go: the API's rule (loaded, meant to be, on an enabled server)."""
    return Deployment.objects.select_related("server", "version__model").filter(
        version=version, desired=DesiredState.LOADED, observed=ObservedState.LOADED, server__enabled=True
    )


@dataclass
class AccuracyRun:
    """The latest accuracy run asked for from the UI (its `accuracy.run` audit row) and what
    became of it: the version's newest accuracy result written after it, if any yet."""

    queued: AuditEvent
    result: CheckResult | None
    waited_s: int
    # The accuracy queue's hard time limit: past it, the worker killed the task (or never
    # got it), so no result will come and the page must stop waiting.
    limit_s: int

    @property
    def server(self) -> str:
        return self.queued.details.get("server", "")

    @property
    def timed_out(self) -> bool:
        return self.result is None and self.waited_s > self.limit_s

    @property
    def final(self) -> bool:
        return self.result is not None or self.timed_out


def latest_accuracy_run(version: ModelVersion) -> AccuracyRun | None:
    """The version's latest UI accuracy run (None if there was none), in two queries."""
    queued = (
        AuditEvent.objects.filter(
            action="accuracy.run", object_type=ModelVersion._meta.label_lower, object_id=str(version.pk)
        )
        .order_by("-created_at", "-id")
        .first()
    )
    if queued is None:
        return None
    result = (
        CheckResult.objects.filter(kind=CheckKind.ACCURACY, version=version, created_at__gt=queued.created_at)
        .select_related("server")
        .order_by("-created_at", "-id")
        .first()
    )
    waited = timezone.now() - queued.created_at
    _, hard_limit = settings.TASK_TIME_LIMITS_BY_QUEUE["accuracy"]
    return AccuracyRun(queued, result, int(waited.total_seconds()), hard_limit)


def _model_aliases(version: ModelVersion) -> list[Alias]:
    """All aliases of the version's model, with the version each points at (the promote form's choices)."""
    return list(Alias.objects.filter(model_id=version.model_id).select_related("version").order_by("name"))


@dataclass
class ServerChoice:
    server: InferenceServer
    refusal: str  # why it cannot serve the version ("" when it can)


# --- the version page ------------------------------------------------------------------


@require_scope(Scope.READ)
def version_detail(request, name: str, number: int):
    version = _version(name, number)
    deployments = with_progress(
        Deployment.objects.filter(version=version).select_related("server").order_by("server__name")
    )
    evaluation_set = EvaluationSet.objects.filter(model_id=version.model_id).first()
    context = {
        "version": version,
        "model": version.model,
        "triton_config": triton_config_text(version),
        "deployments": deployments,
        "server_choices": [
            ServerChoice(s, cannot_serve(s, version)) for s in InferenceServer.objects.filter(enabled=True)
        ],
        "evaluation_set": evaluation_set,
        "accuracy_results": CheckResult.objects.filter(kind=CheckKind.ACCURACY, version=version)
        .select_related("server")
        .order_by("-created_at", "-id")[:ACCURACY_ROWS],
        "can_run_accuracy": evaluation_set is not None and _loaded_deployments(version).exists(),
        "accuracy_run": latest_accuracy_run(version),
        "model_aliases": _model_aliases(version),
        "other_versions": _other_numbers(version),
        "metadata_json": json.dumps(version.metadata, indent=2, sort_keys=True) if version.metadata else "",
        "ci_run_link": version.ci_run_url.startswith(("http://", "https://")),
        "chart_target": f"version:{version.pk}",
    }
    return render(request, "ui/versions/detail.html", context)


@require_scope(Scope.READ)
def version_accuracy_status(request, name: str, number: int):
    """The accuracy panel's fragment, polled by the page until it carries data-final."""
    version = get_object_or_404(ModelVersion.objects.select_related("model"), model__name=name, number=number)
    context = {"version": version, "run": latest_accuracy_run(version)}
    return render(request, "ui/versions/accuracy_status.html", context)


# --- comparison ------------------------------------------------------------------------


@dataclass
class SchemaRow:
    direction: str
    name: str
    left: TensorSpec | None
    right: TensorSpec | None

    @property
    def differs(self) -> bool:
        if self.left is None or self.right is None:
            return True
        return self.left.as_dict() != self.right.as_dict()


def schema_rows(left: ModelVersion, right: ModelVersion) -> list[SchemaRow]:
    """Inputs then outputs, matched by name: left's order first, then right's extra tensors."""
    rows = []
    for direction in (TensorSpec.Direction.INPUT, TensorSpec.Direction.OUTPUT):
        ours = {t.name: t for t in left.tensors.all() if t.direction == direction}
        theirs = {t.name: t for t in right.tensors.all() if t.direction == direction}
        for name in list(ours) + [n for n in theirs if n not in ours]:
            rows.append(SchemaRow(direction, name, ours.get(name), theirs.get(name)))
    return rows


def _latest(kind: str, version: ModelVersion) -> CheckResult | None:
    return (
        CheckResult.objects.filter(kind=kind, version=version, value__isnull=False)
        .select_related("server")
        .order_by("-created_at", "-id")
        .first()
    )


@dataclass
class Side:
    """One column of the comparison."""

    version: ModelVersion
    config: str
    accuracy: CheckResult | None
    latency: CheckResult | None


def _side(version: ModelVersion) -> Side:
    return Side(
        version, triton_config_text(version), _latest(CheckKind.ACCURACY, version), _latest(CheckKind.LATENCY, version)
    )


@require_scope(Scope.READ)
def version_compare(request, name: str, number: int):
    version = _version(name, number)
    context = {"version": version, "model": version.model, "other_versions": _other_numbers(version)}
    raw = request.GET.get("with")
    if raw is None:
        # Opened without a choice: the page is the form to make one.
        context["problem"] = "choose a version to compare with"
        return render(request, "ui/versions/compare.html", context)
    try:
        other = _version(name, other_version(version, raw).number)
    except ValueError as exc:
        context["problem"] = str(exc)
        return render(request, "ui/versions/compare.html", context, status=400)
    left, right = _side(version), _side(other)
    context.update(
        left=left,
        right=right,
        sides=[left, right],
        schema=schema_rows(version, other),
        config_diff="".join(
            difflib.unified_diff(
                left.config.splitlines(keepends=True),
                right.config.splitlines(keepends=True),
                fromfile=f"{name} v{version.number}",
                tofile=f"{name} v{other.number}",
            )
        ),
    )
    return render(request, "ui/versions/compare.html", context)


def _other_numbers(version: ModelVersion):
    return (
        version.model.versions.exclude(pk=version.pk)
        .order_by("-number")
        .values_list("number", flat=True)[:COMPARE_CHOICES]
    )


# --- artifact --------------------------------------------------------------------------


@require_scope(Scope.READ)
def version_artifact(request, name: str, number: int):
    version = get_object_or_404(ModelVersion.objects.select_related("model"), model__name=name, number=number)
    try:
        stored = version.artifact.open("rb")
    except StorageUnavailable as exc:  # the bucket is unreachable: say which, not a 500
        return HttpResponse(
            str(exc), status=503, content_type="text/plain; charset=utf-8", headers={"Retry-After": "10"}
        )
    # FileResponse sends the file a block at a time: a large artifact never sits in memory
    # (from a bucket, one streamed GET).
    return FileResponse(
        stored,
        as_attachment=True,
        filename=f"{version.model.name}-v{version.number}.{version.artifact_format}",
    )


# --- actions ---------------------------------------------------------------------------


def _refuse(request, error: str, version: ModelVersion) -> HttpResponseRedirect:
    messages.error(request, error)
    return redirect(_version_url(version))


@require_POST
@require_scope(Scope.DEPLOY)
def version_deploy(request, name: str, number: int):
    version = _version(name, number)
    form = DeployForm(request.POST)
    if not form.is_valid():
        return _refuse(request, form_errors(form), version)
    servers = form.cleaned_data["servers"]
    try:
        deployments = request_deploy(version, servers, ui_actor(request))
    except BackendMissing as exc:  # the API's refusal, naming each server and what it lacks
        return _refuse(request, f"servers: {exc}", version)
    except TaskQueueUnavailable as exc:  # recorded all the same; the periodic reconcile does it
        messages.warning(request, str(exc))
        return redirect(_version_url(version))
    names = ", ".join(s.name for s in servers)
    messages.success(request, f"Deploying {version} to {names}: the progress shows below.")
    if len(deployments) == 1:
        return redirect("ui:deployment-detail", pk=deployments[0].pk)
    return redirect(_version_url(version))


@require_POST
@require_scope(Scope.DEPLOY)
def version_undeploy(request, name: str, number: int):
    version = _version(name, number)
    form = UndeployForm(request.POST)
    if not form.is_valid():
        return _refuse(request, form_errors(form), version)
    server = form.cleaned_data["server"]
    try:
        [deployment] = request_undeploy(version, [server], ui_actor(request))
    except TaskQueueUnavailable as exc:  # recorded all the same; the periodic reconcile does it
        messages.warning(request, str(exc))
        return redirect(_version_url(version))
    messages.success(request, f"Undeploying {version} from {server.name}: the progress shows below.")
    return redirect("ui:deployment-detail", pk=deployment.pk)


@require_POST
@require_scope(Scope.UPLOAD)
def version_accuracy_run(request, name: str, number: int):
    """Queue the accuracy check of this version on one server where it is loaded
    (the scheduled check's task); the result lands in the page's evaluation results."""
    version = _version(name, number)
    if not EvaluationSet.objects.filter(model_id=version.model_id).exists():
        return _refuse(
            request,
            f"model {version.model.name!r} has no evaluation set: "
            f"PUT one at /api/v1/models/{version.model.name}/evaluation-set/ first",
            version,
        )
    deployment = _loaded_deployments(version).order_by("server__name").first()
    if deployment is None:
        return _refuse(request, f"{version} is not loaded on any enabled server: deploy it first", version)
    try:
        with transaction.atomic():  # the audit row, and the task only once it is committed
            audit(ui_actor(request), "accuracy.run", version, server=deployment.server.name, status="queued")
            enqueue_on_commit(
                run_accuracy,
                deployment.pk,
                recorded="the request",
                picked_up_by="the scheduled accuracy pass (for versions with no recent result)",
            )
    except TaskQueueUnavailable as exc:
        messages.warning(request, str(exc))
        return redirect(_version_url(version))
    messages.success(
        request, f"Accuracy run of {version} on {deployment.server.name} queued: its result appears below."
    )
    return redirect(_version_url(version))
