"""The reconciler: make one Triton server serve exactly its desired deployments.

It compares what should be loaded (Deployment.desired) with what Triton
reports (model metadata and readiness: a model loaded by file override is not
in the repository index), then loads or unloads. All versions of one model on
one server are one Triton model, loaded in one call with
version_policy.specific, so a load always sends every wanted version: its
files inside the request, or, for a server with a model repository, written
to that folder first (serving/model_repository.py) with only the config sent.

Each model is reconciled on its own: under its own lock (per server and
model, so two workers never load the same model twice while a slow load of one
model never holds back another), on its own thread when a server has several,
and with its own error handling, so one bad model (a missing file, a load that
hangs, a bug) fails that model's deployments with a back-off and the pass goes
on with the rest. A loaded version is kept only if Triton's metadata and a
smoke inference with inputs generated from the schema agree with the
registered schema; one that does not is failed and unloaded, never left
serving behind "failed".

It is idempotent: a second run finds nothing to do. No database transaction
is open while Triton is called.
"""

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import gevent
from django.conf import settings
from django.db import connection
from django.utils import timezone

from modelhub.audit.actors import SYSTEM
from modelhub.audit.log import record
from modelhub.lib.onnx_models import ONNX_RUNNER_MODEL_PY
from modelhub.registry.artifacts import ArtifactFiles, read_artifact_files
from modelhub.registry.models import Model, ModelVersion
from modelhub.registry.triton_config import build_model_config, label_filename, metadata_differences, metadata_schema
from modelhub.serving import model_repository
from modelhub.serving.health import record_server_health
from modelhub.serving.locks import model_lock
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState
from modelhub.serving.probe_inputs import answer_differences, probe_inputs
from modelhub.serving.signals import around_model_change
from modelhub.serving.transitions import hold_off, observe
from modelhub.serving.triton_client import FileGroup, TritonClient, TritonError, TritonUnavailable

log = logging.getLogger(__name__)

# Models of one server reconciled at once, each on its own thread, database
# connection and Triton client: a load that hangs occupies one of them.
PARALLEL_MODELS = 8
# A model whose desired state changes while it is being reconciled is looked
# at again at once (the run that change enqueued found it busy), this often at most.
MAX_ROUNDS = 5


@dataclass
class ReconcileReport:
    server: str
    reachable: bool = True
    busy: list[str] = field(default_factory=list)  # models another run was reconciling; it picks up changes
    loads: list[str] = field(default_factory=list)  # "model: versions" per load call
    unloads: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.loads or self.unloads)

    def add(self, other: "ReconcileReport") -> None:
        self.busy += other.busy
        self.loads += other.loads
        self.unloads += other.unloads
        self.failures += other.failures


def reconcile_server(server_id: int) -> ReconcileReport:
    server = InferenceServer.objects.get(pk=server_id)
    report = ReconcileReport(server.name)
    if not server.enabled:
        return report
    active = Deployment.objects.filter(server=server).exclude(
        desired=DesiredState.UNLOADED, observed=ObservedState.UNLOADED
    )
    client = TritonClient.for_server(server)
    try:
        record_server_health(server, client)
    except TritonUnavailable as exc:
        report.reachable = False
        report.failures.append(str(exc))
        for deployment in active.filter(desired=DesiredState.LOADED):
            # Keep any back-off: a model whose load crashed the server must not
            # be loaded into it again the moment it restarts.
            observe(deployment, ObservedState.FAILED, str(exc), retry_at=deployment.retry_at)
        return report
    finally:
        client.close()
    models = list(Model.objects.filter(pk__in=active.values("version__model_id")).order_by("name"))
    if len(models) == 1:
        report.add(_reconcile_model_locked(server, models[0]))
        return report
    with ThreadPoolExecutor(min(PARALLEL_MODELS, len(models) or 1), thread_name_prefix="reconcile") as pool:
        for part in pool.map(lambda model: _on_own_thread(server, model), models):
            report.add(part)
    return report


def _on_own_thread(server: InferenceServer, model: Model) -> ReconcileReport:
    try:
        return _reconcile_model_locked(server, model)
    finally:
        # Threads of a pool die with it: close what each opened, its database
        # connection (and with it any advisory lock) and the gevent hub the
        # Triton client's timeouts run on (two file descriptors each).
        connection.close()
        gevent.get_hub().destroy(destroy_loop=True)


def _reconcile_model_locked(server: InferenceServer, model: Model) -> ReconcileReport:
    report = ReconcileReport(server.name)
    try:
        _reconcile_model_rounds(server, model, report)
    except Exception as exc:  # the lock or the database failed: nothing can be recorded
        log.exception("reconciling model %s on server %s failed", model.name, server.name)
        report.failures.append(f"reconciling {model.name} on {server.name} failed: {type(exc).__name__}: {exc}")
    return report


def _reconcile_model_rounds(server: InferenceServer, model: Model, report: ReconcileReport) -> None:
    for round_number in range(MAX_ROUNDS):
        with model_lock(server.pk, model.pk) as acquired:
            if not acquired:
                if round_number == 0:
                    report.busy.append(model.name)
                return
            seen = _reconcile_model_safely(server, model, report)
        # A change committed while we held the lock was skipped by the run it
        # enqueued (it found the model busy), so look again once the lock is
        # free; if someone else holds it by then, that run sees the change.
        if _desired_snapshot(server, model) == seen:
            return


def _desired_snapshot(server: InferenceServer, model: Model) -> frozenset:
    # Only what requests write: the reconciler's own writes must not look like changes.
    rows = Deployment.objects.filter(server=server, version__model=model)
    return frozenset(rows.values_list("pk", "desired", "desired_at"))


def _reconcile_model_safely(server: InferenceServer, model: Model, report: ReconcileReport) -> frozenset:
    """Reconcile one model; whatever goes wrong fails its deployments, not the pass."""
    seen = _desired_snapshot(server, model)
    client = TritonClient.for_server(server)
    try:
        deployments = list(
            Deployment.objects.filter(server=server, version__model=model)
            .exclude(desired=DesiredState.UNLOADED, observed=ObservedState.UNLOADED)
            .select_related("version__model")
            .prefetch_related("version__tensors")
        )
        _reconcile_model(server, client, model, deployments, report)
    except Exception as exc:
        # One model's trouble, whatever it is, must not stop the others.
        log.exception("reconciling model %s on server %s failed", model.name, server.name)
        error = str(exc)  # a TritonError names the server, the call and what Triton said
        if not isinstance(exc, TritonError):
            error = f"reconciling {model.name} on {server.name} failed: {type(exc).__name__}: {exc}"
        report.failures.append(error)
        # An unreachable server is not the model's fault: no back-off, so it is
        # loaded again as soon as the server answers.
        _fail_model(server, model, error, backoff=not isinstance(exc, TritonUnavailable))
    finally:
        client.close()
    return seen


def _fail_model(server: InferenceServer, model: Model, error: str, *, backoff: bool) -> None:
    retry_at = _retry_at() if backoff else None
    for deployment in Deployment.objects.filter(server=server, version__model=model, desired=DesiredState.LOADED):
        # Never shorten a back-off written earlier in this pass (before a load).
        later = max((t for t in (deployment.retry_at, retry_at) if t is not None), default=None)
        observe(deployment, ObservedState.FAILED, error, retry_at=later)


def _retry_at():
    return timezone.now() + timedelta(seconds=settings.DEPLOY_RETRY_AFTER_S)


def _is_waiting_to_retry(deployment: Deployment, now) -> bool:
    return deployment.retry_at is not None and deployment.retry_at > now


def _fail_interrupted_loads(server: InferenceServer, deployments: list[Deployment], now) -> None:
    """A back-off on a deployment not observed failed was written before a load
    whose outcome was never recorded: the worker died during the load. Say so."""
    for deployment in deployments:
        if (
            deployment.desired == DesiredState.LOADED
            and deployment.observed != ObservedState.FAILED
            and _is_waiting_to_retry(deployment, now)
        ):
            observe(
                deployment,
                ObservedState.FAILED,
                f"the load of version {deployment.version.number} on {server.name} "
                "did not finish: the worker running it stopped before Triton answered (killed, out of memory?); "
                f"next attempt after {deployment.retry_at.isoformat(timespec='seconds')}",
                retry_at=deployment.retry_at,
            )


def _reconcile_model(
    server: InferenceServer, client: TritonClient, model: Model, deployments: list[Deployment], report: ReconcileReport
) -> None:
    now = timezone.now()
    _fail_interrupted_loads(server, deployments, now)
    loaded = [d for d in deployments if d.desired == DesiredState.LOADED]
    if loaded and len(loaded) == len(deployments) and all(_is_waiting_to_retry(d, now) for d in loaded):
        # Nothing to do before the back-off ends, so ask Triton nothing: a
        # failed model costs no calls (and none that could wait behind its
        # load, which Triton may still be running after a timeout).
        return
    served = client.served_versions(model.name)
    # A version backing off is not loaded again before its time, but one that
    # Triton serves anyway (a load that timed out and finished later) is kept
    # if it passes the checks, not thrown away.
    candidates = {
        d.version.number: d
        for d in deployments
        if d.desired == DesiredState.LOADED and (d.version.number in served or not _is_waiting_to_retry(d, now))
    }
    candidates = _drop_incompatible(server, candidates)

    rejected: set[int] = set()  # failed to load or failed the checks: not kept
    verified: set[int] = set()
    while True:
        target = {n: d for n, d in candidates.items() if n not in rejected}
        if set(target) != served:
            if target:
                try:
                    rejected |= _load(server, client, model, target, served, report)
                except _LoadStillRunning:
                    return  # its versions are failed with a back-off; Triton would not answer about it now
            else:
                with around_model_change(server, model.name, _version_ids(deployments, served), "unload"):
                    client.unload(model.name)
                report.unloads.append(model.name)
                record(SYSTEM, "triton.unload", server, model=model.name)
                if server.model_repository:
                    _tidy_model_repository(server, model.name, set())
            _fresh_connections(client)
            served = client.served_versions(model.name)
        bad = set()
        for number in sorted((set(target) - rejected - verified) & served):
            problem = _check_served(client, target[number])
            if problem:
                problem += f"; not kept loaded on {server.name}"
                observe(target[number], ObservedState.FAILED, problem, retry_at=_retry_at())
                record(SYSTEM, "triton.check_failed", server, model=model.name, versions=[number], error=problem)
                report.failures.append(problem)
                bad.add(number)
            else:
                verified.add(number)
        if not bad:
            break
        rejected |= bad  # the next round loads the model without them, or unloads it

    for deployment in deployments:
        number = deployment.version.number
        if deployment.desired == DesiredState.UNLOADED:
            if number not in served:
                observe(deployment, ObservedState.UNLOADED)
        elif number in verified and number in served:
            observe(deployment, ObservedState.LOADED)
        elif number in candidates and number not in rejected:
            observe(
                deployment,
                ObservedState.FAILED,
                f"version {number} is not ready on {server.name} after load",
                retry_at=_retry_at(),
            )


def _version_ids(deployments: list[Deployment], numbers: set[int]) -> list[int]:
    return [d.version_id for d in deployments if d.version.number in numbers]


def _check_served(client: TritonClient, deployment: Deployment) -> str:
    """'' if a served version agrees with its registered schema, else what differs.

    The metadata is compared on every pass (cheap); the smoke inference runs
    only when the version is not yet observed loaded, i.e. after a load.
    """
    problem = _schema_mismatch(client, deployment.version)
    if problem or deployment.observed == ObservedState.LOADED:
        return problem
    return _smoke_mismatch(client, deployment.version)


def _smoke_mismatch(client: TritonClient, version: ModelVersion) -> str:
    """One inference with random inputs generated from the registered schema;
    '' if the answer's outputs have the registered names, datatypes and shapes."""
    arrays, datatypes = probe_inputs([t.as_dict() for t in version.inputs], version.max_batch_size)
    try:
        # The first inference after a load may warm the model up (lazy initialisation,
        # a GPU engine's first run): give it the load's timeout, not a health call's.
        answer = client.infer_outputs(
            version.model.name, version.number, arrays, datatypes, timeout=client.load_timeout
        )
    except TritonUnavailable:
        raise
    except TritonError as exc:
        return f"smoke inference of {version} with inputs generated from its schema failed: {exc}"
    _, answered = metadata_schema({"outputs": answer}, version.max_batch_size)
    problems = answer_differences([t.as_dict() for t in version.outputs], answered)
    if not problems:
        return ""
    return f"smoke inference of {version} answered outside its registered schema: " + "; ".join(problems)


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
                retry_at=_retry_at(),
            )
    return result


def _fresh_connections(client: TritonClient) -> None:
    """Open new connections for the calls that follow.

    Triton's HTTP frontend serves each connection on one worker thread and
    runs a load on its connection's worker until the load ends: a connection
    kept open on that worker waits with it (measured on 2.51: a health call on
    one of six open connections waited out a 6 s load; new connections did
    not). Short-lived connections keep one model's slow load from stalling the
    calls made for other models.
    """
    client.close()


class _LoadStillRunning(Exception):
    """A load call timed out; Triton may still be loading the model."""


_FAILED_VERSION = re.compile(r"version (\d+) is at UNAVAILABLE state")


def _load(
    server: InferenceServer,
    client: TritonClient,
    model: Model,
    wanted: dict[int, Deployment],
    served: set[int],
    report: ReconcileReport,
) -> set[int]:
    """Load the wanted versions; returns those that failed, each observed
    failed with a back-off. If Triton names the versions that failed, or the
    request for new versions cannot be built (a missing artifact file), try
    again without them (Triton keeps serving what it had)."""
    attempt = dict(wanted)
    failed: set[int] = set()
    triton_refused = False
    while attempt and set(attempt) != served:
        new = set(attempt) - served
        retry_at = _retry_at()
        # The back-off goes first: if this load kills the worker, the next
        # pass finds it and does not load the same thing again at once.
        hold_off([attempt[n] for n in new], retry_at)
        versions = sorted(attempt)
        try:
            loading = [d.version for d in attempt.values()]
            if server.model_repository:  # Triton reads the files from its own folder
                config, files = _write_to_model_repository(server, model.name, loading), []
            else:
                config, files = build_load_request(server, model.name, loading)
            _fresh_connections(client)
            with around_model_change(server, model.name, [d.version_id for d in attempt.values()], "load"):
                client.load(model.name, config, files)
        except TritonUnavailable as exc:
            # Most often the load outlasted TRITON_LOAD_TIMEOUT_S: back off as
            # from any failed load. Triton may still finish it; a version it
            # serves by a later pass is checked and kept. (If the server went
            # down, the back-off stands too: a model whose load crashes its
            # server must not crash it again as soon as it restarts.)
            culprits = new or set(attempt)
            error = f"{exc} (Triton may still be loading it; it is not loaded again before the back-off ends)"
            _fail_load(server, model, attempt, culprits, error, retry_at, report)
            raise _LoadStillRunning from exc
        except TritonError as exc:
            triton_refused = True
            named = {int(v) for v in _FAILED_VERSION.findall(exc.detail)} & set(attempt)
            culprits = named or new or set(attempt)
            _fail_load(server, model, attempt, culprits, str(exc), retry_at, report)
            failed |= culprits
            if not named:
                break
        except Exception as exc:  # the request could not be built: a missing or unreadable artifact
            log.exception("preparing the load of %s versions %s on %s failed", model.name, versions, server.name)
            culprits = new or set(attempt)
            error = f"preparing the load of {model.name} versions {versions} on {server.name} failed: "
            _fail_load(server, model, attempt, culprits, error + f"{type(exc).__name__}: {exc}", retry_at, report)
            failed |= culprits
        else:
            report.loads.append(f"{model.name}: {versions}")
            record(SYSTEM, "triton.load", server, model=model.name, versions=versions)
            if server.model_repository:  # Triton serves these versions only: the others' folders can go
                _tidy_model_repository(server, model.name, set(attempt))
            return failed
    if triton_refused and not served:
        # Nothing of this model is served: unload it, so that Triton lets go
        # of what the failed load left (on 2.51 its temporary model folder
        # stays even so, until the model's next load or the server's exit).
        try:
            with around_model_change(server, model.name, [d.version_id for d in wanted.values()], "unload"):
                client.unload(model.name)
        except TritonError as exc:
            log.warning("unloading %s on %s after its failed load: %s", model.name, server.name, exc)
        if server.model_repository:
            _tidy_model_repository(server, model.name, set())
    return failed


def _tidy_model_repository(server: InferenceServer, name: str, keep: set[int]) -> None:
    """Remove the model's version folders not in `keep` (its whole folder if none); a failure only costs disk."""
    try:
        if keep:
            model_repository.remove_versions_except(server.model_repository, name, keep)
        else:
            model_repository.remove_model(server.model_repository, name)
    except (OSError, model_repository.ModelRepositoryError) as exc:
        log.warning("tidying %s in the model repository of %s failed: %s", name, server.name, exc)


def _fail_load(server, model, attempt: dict[int, Deployment], culprits: set[int], error: str, retry_at, report) -> None:
    for number in culprits:
        observe(attempt.pop(number), ObservedState.FAILED, error, retry_at=retry_at)
    record(SYSTEM, "triton.load_failed", server, model=model.name, versions=sorted(culprits), error=error)
    report.failures.append(error)


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
    from modelhub.serving.backends import needs_onnx_runner  # the one place that knows backends

    return needs_onnx_runner(server, version)


@dataclass
class _LoadFiles:
    """What one load of some versions of a model needs, listed, nothing read yet.

    Where two sources give the same path, the later wins: newer versions'
    model-level files, then generated files.
    """

    artifacts: dict[int, ArtifactFiles]  # version number -> its stored files
    model_files: dict[str, ArtifactFiles]  # model-level path -> the artifact it is taken from
    generated: dict[str, bytes]  # path in the model folder -> bytes (the ONNX runner, labels)


def _load_files(server, versions: list[ModelVersion]) -> _LoadFiles:
    newest = max(versions, key=lambda v: v.number)
    files = _LoadFiles({}, {}, {})
    for version in sorted(versions, key=lambda v: v.number):
        artifact = files.artifacts[version.number] = read_artifact_files(version)
        files.model_files.update(dict.fromkeys(artifact.model_files, artifact))
        if _needs_onnx_runner(server, version):
            files.generated[f"{version.number}/model.py"] = ONNX_RUNNER_MODEL_PY.encode()
    for tensor in newest.outputs:
        if tensor.labels:
            files.generated[label_filename(tensor.name)] = "\n".join(tensor.labels).encode() + b"\n"
    for path in files.generated:
        files.model_files.pop(path, None)
    return files


def build_load_request(server, name: str, versions: list[ModelVersion]) -> tuple[dict, list[FileGroup]]:
    """The config and files of one load call for `versions` of a model.

    The files travel inside the request: the artifacts are only listed here
    and the load streams their files from storage, so memory does not grow
    with the model; generated files (the ONNX runner, labels) are small and
    built in memory. (A server with a model repository gets them on disk
    instead: see `_write_to_model_repository`.)
    """
    newest = max(versions, key=lambda v: v.number)
    config = deployable_config(server, newest, [v.number for v in versions])
    files = _load_files(server, versions)

    def artifact_group(number: int, artifact: ArtifactFiles) -> FileGroup:
        paths = {("version", relpath): f"{number}/{relpath}" for relpath in artifact.version_files}
        paths.update({("model", p): p for p, owner in files.model_files.items() if owner is artifact})
        paths = {key: path for key, path in paths.items() if path not in files.generated}
        sizes = {path: artifact.size(kind, relpath) for (kind, relpath), path in paths.items()}

        @contextmanager
        def open_streams():
            with artifact.streams(paths) as members:
                yield ((paths[kind, relpath], stream) for kind, relpath, stream in members)

        return FileGroup(sizes, open_streams)

    groups = [artifact_group(number, artifact) for number, artifact in sorted(files.artifacts.items())]
    return config, [group for group in groups if group.sizes] + [FileGroup.in_memory(files.generated)]


def _write_to_model_repository(server, name: str, versions: list[ModelVersion]) -> dict:
    """Write the model's folder into the server's model repository; the config of a load that reads it."""
    newest = max(versions, key=lambda v: v.number)
    files = _load_files(server, versions)
    model_repository.write_model_folder(
        server.model_repository,
        server.name,
        name,
        {v.number: (v.sha256, files.artifacts[v.number]) for v in versions},
        files.model_files,
        files.generated,
    )
    return deployable_config(server, newest, [v.number for v in versions])


def _schema_mismatch(client: TritonClient, version: ModelVersion) -> str:
    """Compare Triton's served metadata with the registered schema; '' if they agree."""
    metadata = client.model_metadata(version.model.name, version.number)
    problems = metadata_differences(
        metadata, version.max_batch_size, [t.as_dict() for t in version.inputs], [t.as_dict() for t in version.outputs]
    )
    if not problems:
        return ""
    return f"served metadata of {version} disagrees with its registered schema: " + "; ".join(problems)
