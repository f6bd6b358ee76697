"""The reconciler: make one Triton server serve exactly its desired deployments.

It compares what should be loaded (Deployment.desired) with what Triton
reports (model metadata and readiness: a model loaded by file override is not
in the repository index), then loads or unloads. Every version is its own
Triton model, `<model>__v<n>` (serving.models.triton_model_name) holding only
version n, so versions whose configs differ (schema, batching, backend) are
served side by side, and loading, failing or unloading one version never
reloads or stops another. A load sends that version's files inside the
request, or, for a server with a model repository, writes them to that
folder first (serving/model_repository.py) and sends only the config.

Each model is reconciled on its own: under its own lock (per server and
model, so two workers never load the same version twice while a slow load of
one model never holds back another), on its own thread when a server has
several, and with its own error handling, so one bad model or version (a
missing file, a load that hangs, a bug) fails those deployments with a
back-off and the pass goes on with the rest. A loaded version is kept only if
Triton's metadata and a smoke inference with inputs generated from the schema
agree with the registered schema; one that does not is failed and unloaded,
never left serving behind "failed". A Triton model whose name is not one of
ModelHub's is never touched.

It is idempotent: a second run finds nothing to do. No database transaction
is open while Triton is called.
"""

import logging
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
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState, triton_model_name
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
    loads: list[str] = field(default_factory=list)  # "model: [version]" per load call
    unloads: list[str] = field(default_factory=list)  # "model: [version]" per unload call
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
    if server.drained_at is not None:
        # Its address left its group's DNS name: no host to call. Requests made meanwhile
        # read "drained"; the desired state waits for the server's return.
        from modelhub.serving.discovery import mark_drained

        mark_drained(server)
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
    known: set[int] = set()  # versions this run looked at: one whose row is deleted meanwhile is unloaded
    for round_number in range(MAX_ROUNDS):
        with model_lock(server.pk, model.pk) as acquired:
            if not acquired:
                if round_number == 0:
                    report.busy.append(model.name)
                return
            seen = _reconcile_model_safely(server, model, report, known)
        # A change committed while we held the lock was skipped by the run it
        # enqueued (it found the model busy), so look again once the lock is
        # free; if someone else holds it by then, that run sees the change.
        if _desired_snapshot(server, model) == seen:
            return


def _desired_snapshot(server: InferenceServer, model: Model) -> frozenset:
    # Only what requests write: the reconciler's own writes must not look like changes.
    rows = Deployment.objects.filter(server=server, version__model=model)
    return frozenset(rows.values_list("pk", "desired", "desired_at"))


def _reconcile_model_safely(
    server: InferenceServer, model: Model, report: ReconcileReport, known: set[int]
) -> frozenset:
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
        _reconcile_model(server, client, model, deployments, report, known)
    except Exception as exc:
        # One model's trouble, whatever it is, must not stop the others.
        log.exception("reconciling model %s on server %s failed", model.name, server.name)
        error = _error_text(exc, f"reconciling {model.name} on {server.name}")
        report.failures.append(error)
        # An unreachable server is not the model's fault: no back-off, so it is
        # loaded again as soon as the server answers.
        _fail_model(server, model, error, backoff=not isinstance(exc, TritonUnavailable))
    finally:
        client.close()
    return seen


def _error_text(exc: Exception, doing: str) -> str:
    if isinstance(exc, TritonError):
        return str(exc)  # it names the server, the call and what Triton said
    return f"{doing} failed: {type(exc).__name__}: {exc}"


def _fail_model(server: InferenceServer, model: Model, error: str, *, backoff: bool) -> None:
    for deployment in Deployment.objects.filter(server=server, version__model=model, desired=DesiredState.LOADED):
        _fail_keeping_backoff(deployment, error, backoff=backoff)


def _fail_keeping_backoff(deployment: Deployment, error: str, *, backoff: bool) -> None:
    retry_at = _retry_at() if backoff else None
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
    server: InferenceServer,
    client: TritonClient,
    model: Model,
    deployments: list[Deployment],
    report: ReconcileReport,
    known: set[int],
) -> None:
    """Each version on its own: it is its own Triton model (triton_model_name), so
    loading, failing or unloading one never touches its siblings."""
    now = timezone.now()
    _fail_interrupted_loads(server, deployments, now)
    for deployment in sorted(deployments, key=lambda d: d.version.number):
        known.add(deployment.version.number)
        try:
            _reconcile_version(server, client, model, deployment, now, report)
        except TritonUnavailable:
            raise  # the server, not the version: the model's deployments are failed (no back-off) above us
        except Exception as exc:
            # One version's trouble (a bug, a refused call) is that version's; its siblings go on.
            log.exception("reconciling %s on server %s failed", deployment.version, server.name)
            error = _error_text(exc, f"reconciling {deployment.version} on {server.name}")
            report.failures.append(error)
            if deployment.desired == DesiredState.LOADED:
                _fail_keeping_backoff(deployment, error, backoff=True)
    # A version loaded earlier in this run whose deployment row is gone now (deleted
    # meanwhile): nobody else would ever unload it.
    for number in sorted(known - {d.version.number for d in deployments}):
        name = triton_model_name(model.name, number)
        if number in client.served_versions(name):
            _unload(server, client, model, number, [], report)


def _reconcile_version(
    server: InferenceServer,
    client: TritonClient,
    model: Model,
    deployment: Deployment,
    now,
    report: ReconcileReport,
) -> None:
    number = deployment.version.number
    name = triton_model_name(model.name, number)
    if deployment.desired == DesiredState.UNLOADED:
        served = number in client.served_versions(name)
        if served:
            _unload(server, client, model, number, [deployment.version_id], report)
            _fresh_connections(client)
            served = number in client.served_versions(name)  # Triton may take a moment: then the next pass
        if not served:
            observe(deployment, ObservedState.UNLOADED)
        return
    if _is_waiting_to_retry(deployment, now):
        # Nothing to do before the back-off ends, so ask Triton nothing: a failed
        # version costs no calls (and none that could wait behind its load, which
        # Triton may still be running after a timeout). One that Triton serves by
        # then anyway (a timed-out load that finished) is checked and kept, not loaded again.
        return
    found_served = number in client.served_versions(name)
    if not found_served and not _load_until_served(server, client, model, deployment, report):
        return
    problem = _check_served(client, deployment)
    if problem and found_served and deployment.observed != ObservedState.LOADED:
        # Triton served this name before ModelHub loaded it, and not as registered (left by
        # an earlier install, or loaded by hand): the registered version replaces it.
        log.info("%s on %s was served but not as registered (%s): loading it", deployment.version, server.name, problem)
        if not _load_until_served(server, client, model, deployment, report):
            return
        problem = _check_served(client, deployment)
    if problem:
        problem += f"; not kept loaded on {server.name}"
        observe(deployment, ObservedState.FAILED, problem, retry_at=_retry_at())
        record(SYSTEM, "triton.check_failed", server, model=model.name, versions=[number], error=problem)
        report.failures.append(problem)
        _unload(server, client, model, number, [deployment.version_id], report)  # never left serving behind "failed"
        return
    observe(deployment, ObservedState.LOADED)


def _load_until_served(
    server: InferenceServer, client: TritonClient, model: Model, deployment: Deployment, report: ReconcileReport
) -> bool:
    """Load the version and see Triton serve it; False when it failed (observed failed, backing off)."""
    number = deployment.version.number
    try:
        if not _load(server, client, model, deployment, report):
            return False  # failed, with a back-off
    except _LoadStillRunning:
        return False  # failed with a back-off; Triton would not answer about it now
    _fresh_connections(client)
    if number not in client.served_versions(triton_model_name(model.name, number)):
        error = f"version {number} is not ready on {server.name} after load"
        observe(deployment, ObservedState.FAILED, error, retry_at=_retry_at())
        report.failures.append(error)
        _unload_quietly(server, client, deployment)
        return False
    return True


def _unload(
    server: InferenceServer,
    client: TritonClient,
    model: Model,
    number: int,
    version_ids: list[int],
    report: ReconcileReport,
) -> None:
    name = triton_model_name(model.name, number)
    with around_model_change(server, name, version_ids, "unload"):
        client.unload(name)
    report.unloads.append(f"{model.name}: [{number}]")
    record(SYSTEM, "triton.unload", server, model=model.name, versions=[number], triton_model=name)
    if server.model_repository:
        _tidy_model_repository(server, name, set())


def _unload_quietly(server: InferenceServer, client: TritonClient, deployment: Deployment) -> None:
    """After a load that failed: unload, so that Triton lets go of what the load left
    (on 2.51 its temporary model folder stays even so, until the model's next load
    or the server's exit). The version held nothing else, so nothing else stops."""
    name = triton_model_name(deployment.version.model.name, deployment.version.number)
    try:
        with around_model_change(server, name, [deployment.version_id], "unload"):
            client.unload(name)
    except TritonError as exc:
        log.warning("unloading %s on %s after its failed load: %s", name, server.name, exc)
    if server.model_repository:
        _tidy_model_repository(server, name, set())


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
            _triton_name(version), version.number, arrays, datatypes, timeout=client.load_timeout
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


def _triton_name(version: ModelVersion) -> str:
    return triton_model_name(version.model.name, version.number)


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


def _load(
    server: InferenceServer,
    client: TritonClient,
    model: Model,
    deployment: Deployment,
    report: ReconcileReport,
) -> bool:
    """Load one version as its own Triton model; False if it failed (observed
    failed with a back-off, and unloaded again so Triton keeps nothing of it)."""
    version = deployment.version
    name = _triton_name(version)
    retry_at = _retry_at()
    # The back-off goes first: if this load kills the worker, the next
    # pass finds it and does not load the same thing again at once.
    hold_off([deployment], retry_at)
    try:
        if server.model_repository:  # Triton reads the files from its own folder
            config, files = _write_to_model_repository(server, name, [version]), []
        else:
            config, files = build_load_request(server, name, [version])
        _fresh_connections(client)
        with around_model_change(server, name, [version.pk], "load"):
            client.load(name, config, files)
    except TritonUnavailable as exc:
        # Most often the load outlasted TRITON_LOAD_TIMEOUT_S: back off as
        # from any failed load. Triton may still finish it; a version it
        # serves by a later pass is checked and kept. (If the server went
        # down, the back-off stands too: a model whose load crashes its
        # server must not crash it again as soon as it restarts.)
        why = "Triton may still be loading it" if exc.timed_out else "the server stopped answering"
        error = f"{exc} ({why}; it is not loaded again before the back-off ends)"
        _fail_load(server, model, deployment, error, retry_at, report)
        raise _LoadStillRunning from exc
    except TritonError as exc:
        _fail_load(server, model, deployment, str(exc), retry_at, report)
        _unload_quietly(server, client, deployment)
        return False
    except Exception as exc:  # the request could not be built: a missing or unreadable artifact
        log.exception("preparing the load of %s on %s failed", version, server.name)
        error = f"preparing the load of {model.name} version {version.number} ({name}) on {server.name} failed: "
        _fail_load(server, model, deployment, error + f"{type(exc).__name__}: {exc}", retry_at, report)
        if server.model_repository:
            _tidy_model_repository(server, name, set())
        return False
    report.loads.append(f"{model.name}: [{version.number}]")
    record(SYSTEM, "triton.load", server, model=model.name, versions=[version.number], triton_model=name)
    if server.model_repository:  # leftovers of interrupted writes can go
        _tidy_model_repository(server, name, {version.number})
    return True


def _tidy_model_repository(server: InferenceServer, name: str, keep: set[int]) -> None:
    """Remove the Triton model's version folders not in `keep` (its whole folder if none);
    a failure only costs disk."""
    try:
        if keep:
            model_repository.remove_versions_except(server.model_repository, name, keep)
        else:
            model_repository.remove_model(server.model_repository, name)
    except (OSError, model_repository.ModelRepositoryError) as exc:
        log.warning("tidying %s in the model repository of %s failed: %s", name, server.name, exc)


def _fail_load(server, model, deployment: Deployment, error: str, retry_at, report) -> None:
    observe(deployment, ObservedState.FAILED, error, retry_at=retry_at)
    number = deployment.version.number
    name = triton_model_name(model.name, number)
    record(SYSTEM, "triton.load_failed", server, model=model.name, versions=[number], triton_model=name, error=error)
    report.failures.append(error)


def deployable_config(
    server: InferenceServer, version: ModelVersion, versions: list[int], name: str | None = None
) -> dict:
    """The config Triton gets for `version`, named `name` (by default its own Triton name)."""
    backend, platform = version.backend, version.platform
    if _needs_onnx_runner(server, version):
        backend, platform = "python", ""
    return build_model_config(
        name or _triton_name(version),
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
    """The config and files of one load call for `versions` of a model, as Triton model `name`
    (the reconciler loads one version at a time, under its own name).

    The files travel inside the request: the artifacts are only listed here
    and the load streams their files from storage, so memory does not grow
    with the model; generated files (the ONNX runner, labels) are small and
    built in memory. (A server with a model repository gets them on disk
    instead: see `_write_to_model_repository`.)
    """
    newest = max(versions, key=lambda v: v.number)
    config = deployable_config(server, newest, [v.number for v in versions], name)
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
    """Write Triton model `name`'s folder into the server's model repository; the config of a load that reads it."""
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
    return deployable_config(server, newest, [v.number for v in versions], name)


def _schema_mismatch(client: TritonClient, version: ModelVersion) -> str:
    """Compare Triton's served metadata with the registered schema; '' if they agree."""
    metadata = client.model_metadata(_triton_name(version), version.number)
    problems = metadata_differences(
        metadata, version.max_batch_size, [t.as_dict() for t in version.inputs], [t.as_dict() for t in version.outputs]
    )
    if not problems:
        return ""
    return f"served metadata of {version} disagrees with its registered schema: " + "; ".join(problems)
