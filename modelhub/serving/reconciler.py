"""The reconciler: make one Triton server serve exactly its desired deployments.

It compares what should be loaded (Deployment.desired) with what Triton
reports (model metadata and readiness: a model loaded by file override is not
in the repository index), then loads or unloads. All versions of one model on
one server are one Triton model, loaded in one call with
version_policy.specific, so a load always sends every wanted version.

It is idempotent: a second run finds nothing to do. Runs for one server are
serialised by a lock, so two workers never load the same model twice. No
database transaction is open while Triton is called.
"""

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from modelhub.audit.actors import SYSTEM
from modelhub.audit.log import record
from modelhub.lib.onnx_models import ONNX_RUNNER_MODEL_PY
from modelhub.registry.artifacts import read_artifact_files
from modelhub.registry.models import Model, ModelVersion
from modelhub.registry.schema import schema_differences
from modelhub.registry.triton_config import build_model_config, label_filename, metadata_schema
from modelhub.serving.locks import server_lock
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState
from modelhub.serving.transitions import observe
from modelhub.serving.triton_client import TritonClient, TritonError, TritonUnavailable

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    server: str
    busy: bool = False  # another run holds this server's lock
    reachable: bool = True
    loads: list[str] = field(default_factory=list)  # "model: versions" per load call
    unloads: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.loads or self.unloads)


def reconcile_server(server_id: int) -> ReconcileReport:
    server = InferenceServer.objects.get(pk=server_id)
    with server_lock(server.pk) as acquired:
        if not acquired:
            return ReconcileReport(server.name, busy=True)
        return _reconcile(server)


def _reconcile(server: InferenceServer) -> ReconcileReport:
    report = ReconcileReport(server.name)
    if not server.enabled:
        return report
    deployments = list(
        Deployment.objects.filter(server=server)
        .exclude(desired=DesiredState.UNLOADED, observed=ObservedState.UNLOADED)
        .select_related("version__model")
        .prefetch_related("version__tensors")
    )
    client = TritonClient.for_server(server)
    try:
        try:
            record_server_health(server, client)
        except TritonUnavailable as exc:
            report.reachable = False
            for deployment in deployments:
                if deployment.desired == DesiredState.LOADED:
                    observe(deployment, ObservedState.FAILED, str(exc))
            report.failures.append(str(exc))
            return report
        by_model: dict[Model, list[Deployment]] = defaultdict(list)
        for deployment in deployments:
            by_model[deployment.version.model].append(deployment)
        for model, model_deployments in by_model.items():
            try:
                _reconcile_model(server, client, model, model_deployments, report)
            except TritonError as exc:
                # One model's trouble must not stop the others.
                report.failures.append(str(exc))
                for deployment in model_deployments:
                    if deployment.desired == DesiredState.LOADED:
                        observe(deployment, ObservedState.FAILED, str(exc))
    finally:
        client.close()
    return report


def record_server_health(server: InferenceServer, client: TritonClient) -> None:
    """Ask Triton whether it is up and what it is; store the answer on the server."""
    now = timezone.now()
    try:
        health = client.health()
        metadata = client.server_metadata()
    except TritonError as exc:
        InferenceServer.objects.filter(pk=server.pk).update(
            live=False, ready=False, last_checked_at=now, last_error=str(exc)
        )
        raise TritonUnavailable(exc.server, exc.call, exc.detail, exc.status) from exc
    InferenceServer.objects.filter(pk=server.pk).update(
        live=health.live,
        ready=health.ready,
        last_checked_at=now,
        last_seen_at=now,
        last_error="",
        triton_version=metadata.get("version", ""),
        extensions=metadata.get("extensions", []),
    )


def _is_waiting_to_retry(deployment: Deployment, now) -> bool:
    return deployment.observed == ObservedState.FAILED and deployment.retry_at is not None and deployment.retry_at > now


def _reconcile_model(
    server: InferenceServer, client: TritonClient, model: Model, deployments: list[Deployment], report: ReconcileReport
) -> None:
    now = timezone.now()
    wanted = {
        d.version.number: d
        for d in deployments
        if d.desired == DesiredState.LOADED and not _is_waiting_to_retry(d, now)
    }
    wanted = _drop_incompatible(server, wanted)
    served = client.served_versions(model.name)

    if set(wanted) != served:
        if wanted:
            _load(server, client, model, wanted, served, report)
        else:
            client.unload(model.name)
            report.unloads.append(model.name)
            record(SYSTEM, "triton.unload", server, model=model.name)
        served = client.served_versions(model.name)

    for deployment in deployments:
        number = deployment.version.number
        if deployment.desired == DesiredState.UNLOADED:
            if number not in served:
                observe(deployment, ObservedState.UNLOADED)
            continue
        if number in served:
            problem = _schema_mismatch(client, deployment.version)
            if problem:
                observe(deployment, ObservedState.FAILED, problem)
            else:
                observe(deployment, ObservedState.LOADED)
        elif deployment.observed != ObservedState.FAILED:
            observe(deployment, ObservedState.FAILED, f"version {number} is not ready on {server.name} after load")


def _drop_incompatible(server: InferenceServer, wanted: dict[int, Deployment]) -> dict[int, Deployment]:
    """Triton serves one config for all versions of a model. Keep the versions
    whose config matches the newest wanted version; fail the others."""
    if len(wanted) < 2:
        return wanted
    newest = max(wanted)
    reference = deployable_config(server, wanted[newest].version, [])
    result = {}
    for number, deployment in wanted.items():
        if deployable_config(server, deployment.version, []) == reference:
            result[number] = deployment
        else:
            observe(
                deployment,
                ObservedState.FAILED,
                f"version {number} cannot be served beside version {newest} on {server.name}: Triton serves one "
                "model config for all versions of a model, and theirs differ (schema, backend or batching)",
                retry_at=timezone.now() + timedelta(seconds=settings.DEPLOY_RETRY_AFTER_S),
            )
    return result


_FAILED_VERSION = re.compile(r"version (\d+) is at UNAVAILABLE state")


def _load(server, client, model, wanted: dict[int, Deployment], served: set[int], report: ReconcileReport) -> None:
    """Load the wanted versions; if Triton names versions that failed, mark
    those and try again without them (Triton keeps serving what it had)."""
    attempt = dict(wanted)
    while attempt and set(attempt) != served:
        config, files = build_load_request(server, model.name, [d.version for d in attempt.values()])
        try:
            client.load(model.name, config, files)
            report.loads.append(f"{model.name}: {sorted(attempt)}")
            record(SYSTEM, "triton.load", server, model=model.name, versions=sorted(attempt))
            return
        except TritonUnavailable:
            raise
        except TritonError as exc:
            named = {int(v) for v in _FAILED_VERSION.findall(exc.detail)} & set(attempt)
            culprits = named or set(attempt)
            retry_at = timezone.now() + timedelta(seconds=settings.DEPLOY_RETRY_AFTER_S)
            for number in culprits:
                observe(attempt.pop(number), ObservedState.FAILED, str(exc), retry_at=retry_at)
            record(SYSTEM, "triton.load_failed", server, model=model.name, versions=sorted(culprits), error=str(exc))
            report.failures.append(str(exc))
            if not named:
                return


def deployable_config(server: InferenceServer, version: ModelVersion, versions: list[int]) -> dict:
    backend, platform = version.backend, version.platform
    if _needs_onnx_runner(server, version):
        backend, platform = "python", ""
    return build_model_config(
        version.model.name,
        backend=backend,
        platform=platform,
        max_batch_size=version.max_batch_size,
        inputs=[t.as_dict() for t in version.inputs],
        outputs=[t.as_dict() for t in version.outputs],
        extra=version.triton_config,
        versions=versions,
    )


def _needs_onnx_runner(server: InferenceServer, version: ModelVersion) -> bool:
    # A bare ONNX version sent to a server known to lack the onnxruntime
    # backend runs there inside ModelHub's python-backend runner instead.
    return (
        version.platform == "onnxruntime_onnx"
        and bool(server.backends)
        and "onnxruntime" not in server.backends
        and "python" in server.backends
    )


def build_load_request(server, name: str, versions: list[ModelVersion]) -> tuple[dict, dict[str, bytes]]:
    """The config and file overrides of one load call for `versions` of a model."""
    newest = max(versions, key=lambda v: v.number)
    config = deployable_config(server, newest, [v.number for v in versions])
    files: dict[str, bytes] = {}
    for version in sorted(versions, key=lambda v: v.number):
        artifact = read_artifact_files(version)
        for path, data in artifact.model_files.items():
            files[path] = data
        for path, data in artifact.version_files.items():
            files[f"{version.number}/{path}"] = data
        if _needs_onnx_runner(server, version):
            files[f"{version.number}/model.py"] = ONNX_RUNNER_MODEL_PY.encode()
    for tensor in newest.outputs:
        if tensor.labels:
            files[label_filename(tensor.name)] = "\n".join(tensor.labels).encode() + b"\n"
    return config, files


def _schema_mismatch(client: TritonClient, version: ModelVersion) -> str:
    """Compare Triton's served metadata with the registered schema; '' if they agree."""
    metadata = client.model_metadata(version.model.name, version.number)
    inputs, outputs = metadata_schema(metadata, version.max_batch_size)
    problems = schema_differences([t.as_dict() for t in version.inputs], inputs, "input")
    problems += schema_differences([t.as_dict() for t in version.outputs], outputs, "output")
    if not problems:
        return ""
    return f"served metadata of {version} disagrees with its registered schema: " + "; ".join(problems)
