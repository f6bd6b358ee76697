"""One check pass: every enabled server and its deployments, checked concurrently.

A pass asks each server for its health first (the one writer of a server's
health fields); a server that does not answer within the call timeout gets
"server down" results for everything the pass would have checked on it,
without more calls. Every other call runs on a thread pool
(MONITORING_PARALLEL_CALLS threads, MONITORING_CALL_TIMEOUT_S per call), so a
dead or slow server costs its timeout once and never delays the others. The
checks build Results; the pass writes them with ONE record(results, pass_id):
a pass id seen before writes nothing twice. Passes of one kind never overlap
(a lock named after the kind; a pass that finds it taken does nothing).
"""

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime

import gevent
from django.conf import settings
from django.db import connection
from django.utils import timezone

from modelhub.monitoring.checks.latency import probe_latency
from modelhub.monitoring.checks.metrics import check_metrics
from modelhub.monitoring.checks.readiness import check_ready, check_ready_and_schema
from modelhub.monitoring.checks.server_health import check_server_health
from modelhub.monitoring.checks.stats import baseline_key, check_stats, current_baselines, save_baselines
from modelhub.monitoring.models import CheckKind, Status
from modelhub.monitoring.record import Result, record
from modelhub.serving.locks import named_lock
from modelhub.serving.models import Deployment, DesiredState, InferenceServer, ObservedState
from modelhub.serving.triton_client import TritonClient

log = logging.getLogger(__name__)

HEALTH, MODEL_CHECKS, LATENCY, STATS, METRICS = "health", "model_checks", "latency", "stats", "metrics"
INTERVAL_SETTINGS = {
    HEALTH: "MONITORING_HEALTH_INTERVAL_S",
    MODEL_CHECKS: "MONITORING_MODEL_CHECKS_INTERVAL_S",
    LATENCY: "MONITORING_LATENCY_INTERVAL_S",
    STATS: "MONITORING_STATS_INTERVAL_S",
    METRICS: "MONITORING_METRICS_INTERVAL_S",
}
# The passes that check deployments, and the "server down" result each gives a
# deployment of a dead server (no schema result: what a dead server serves is unknown,
# as for a version that is not ready).
DEPLOYMENT_KINDS = {
    MODEL_CHECKS: (CheckKind.MODEL_READY,),
    LATENCY: (CheckKind.LATENCY,),
    STATS: (CheckKind.STATS,),
}


def interval(kind: str) -> float:
    return getattr(settings, INTERVAL_SETTINGS[kind])


def slot_pass_id(kind: str, now: datetime | None = None) -> str:
    """The pass id of the scheduled slot `now` falls in (kind + floor(now / interval))."""
    now = now or timezone.now()
    return f"{kind}:{int(now.timestamp() // interval(kind))}"


@dataclass
class PassReport:
    kind: str
    pass_id: str
    skipped: bool = False  # another pass of this kind held the lock
    results: int = 0
    written: int = 0
    servers_down: list[str] = field(default_factory=list)
    seconds: float = 0.0
    record_seconds: float = 0.0

    def as_dict(self) -> dict:
        return self.__dict__.copy()


@dataclass
class _Pass:
    kind: str
    now: datetime
    baselines: dict = field(default_factory=dict)  # stats: stored baselines by key
    counters: dict = field(default_factory=dict)  # stats: deployment id -> counters read now


def _deployments(kind: str, servers: list[InferenceServer], deployment_ids: list[int] | None) -> list[Deployment]:
    if kind not in DEPLOYMENT_KINDS:
        return []
    rows = Deployment.objects.filter(server__in=servers, desired=DesiredState.LOADED)
    if kind != MODEL_CHECKS:
        # Probing a version that never loaded would only repeat the readiness check's failure.
        rows = rows.filter(observed=ObservedState.LOADED)
    if deployment_ids is not None:
        rows = rows.filter(pk__in=deployment_ids)
    return list(rows.select_related("version__model", "server").prefetch_related("version__tensors"))


def run_pass(
    kind: str,
    pass_id: str | None = None,
    *,
    server_ids: list[int] | None = None,
    deployment_ids: list[int] | None = None,
) -> PassReport:
    """Run one pass of `kind` over all enabled servers (or those given, or the
    servers of the deployments given) and record its results once under `pass_id`."""
    if kind not in INTERVAL_SETTINGS:
        raise ValueError(f"unknown check pass {kind!r}: one of {', '.join(INTERVAL_SETTINGS)}")
    pass_id = pass_id or slot_pass_id(kind)
    report = PassReport(kind, pass_id)
    whole = server_ids is None and deployment_ids is None
    # Only whole passes exclude each other: a "run now" for one deployment must not be skipped.
    with named_lock(f"monitoring.pass:{kind}") if whole else nullcontext(True) as acquired:
        if not acquired:
            report.skipped = True
            return report
        started = time.monotonic()
        _run(kind, pass_id, server_ids, deployment_ids, report)
        report.seconds = round(time.monotonic() - started, 3)
    return report


def _run(kind, pass_id, server_ids, deployment_ids, report: PassReport) -> None:
    # Not drained servers: their address left their group's DNS name (serving.discovery).
    servers = InferenceServer.objects.filter(enabled=True, drained_at__isnull=True)
    if server_ids is not None:
        servers = servers.filter(pk__in=server_ids)
    if deployment_ids is not None:
        servers = servers.filter(deployments__pk__in=deployment_ids).distinct()
    servers = list(servers)
    deployments = _deployments(kind, servers, deployment_ids)
    by_server: dict[int, list[Deployment]] = {s.pk: [] for s in servers}
    for deployment in deployments:
        by_server[deployment.server_id].append(deployment)
    if kind in DEPLOYMENT_KINDS:  # a server with nothing to check costs no call
        servers = [s for s in servers if by_server[s.pk]]
    state = _Pass(kind, timezone.now())
    if kind == STATS:
        state.baselines = current_baselines(deployments)

    results: list[Result] = []
    # No more threads than calls that can run at once: a pass of one server and one deployment needs one.
    size = max(1, min(settings.MONITORING_PARALLEL_CALLS, len(servers) + len(deployments)))
    with _Workers(size, f"checks-{kind}") as pool:
        server_jobs = [pool.submit(_server_job, pool, state, s, by_server[s.pk]) for s in servers]
        deployment_jobs: list[Future] = []
        for server, job in zip(servers, server_jobs, strict=True):
            own, submitted, up = job.result()
            results += own
            deployment_jobs += submitted
            if not up:
                report.servers_down.append(server.name)
        for job in deployment_jobs:
            results += job.result()
    report.results = len(results)
    recording = time.monotonic()
    written = record(results, pass_id)
    report.record_seconds = round(time.monotonic() - recording, 3)
    report.written = len(written)
    if kind == STATS:
        # Only the readings whose results this run wrote move the baselines on: a
        # rerun of a recorded pass must not swallow the requests of the next interval.
        fresh = {row.deployment_id for row in written}
        readings = [(d, state.counters[d.pk]) for d in deployments if d.pk in fresh and d.pk in state.counters]
        save_baselines(readings, state.now)


class _Workers:
    """Threads that run a pass's jobs, each with a Triton client per server it kept.

    Not a ThreadPoolExecutor: a thread here keeps its clients (and their
    keep-alive connections) and its gevent hub from one job to the next, and
    closes them, its database connection and the hub when the pass ends, on
    that thread, as each must be.
    """

    def __init__(self, size: int, name: str):
        self._size, self._name = size, name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._local = threading.local()
        self._threads: list[threading.Thread] = []

    def submit(self, job: Callable, *args) -> Future:
        future: Future = Future()
        self._jobs.put((future, job, args))
        return future

    def client(self, server: InferenceServer) -> TritonClient:
        clients = self._local.clients
        if server.pk not in clients:
            clients[server.pk] = TritonClient.for_server(server, timeout=settings.MONITORING_CALL_TIMEOUT_S)
        return clients[server.pk]

    def __enter__(self) -> "_Workers":
        for number in range(self._size):
            thread = threading.Thread(target=self._work, name=f"{self._name}-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        self._local.clients = {}
        try:
            while (item := self._jobs.get()) is not None:
                future, job, args = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(job(*args))
                    except BaseException as exc:
                        future.set_exception(exc)
        finally:
            for client in self._local.clients.values():
                client.close()
            # The thread ends here: its database connection and the gevent hub
            # the Triton clients' timeouts ran on (two file descriptors) go with it.
            connection.close()
            gevent.get_hub().destroy(destroy_loop=True)


def _server_job(pool: _Workers, state: _Pass, server: InferenceServer, deployments: list[Deployment]):
    """Health first; then the server's own check, and the deployments' checks on the pool."""
    client = pool.client(server)
    health = _guarded(lambda: check_server_health(server, client), CheckKind.SERVER_HEALTH, server=server)
    own = [health] if state.kind == HEALTH else []
    if health.status == Status.FAIL:
        down = f"server down: {health.message}"
        if state.kind == METRICS:
            own.append(Result(CheckKind.METRICS, Status.FAIL, server_id=server.pk, message=down))
        for deployment in deployments:
            own += [_result(kind, deployment, Status.FAIL, down) for kind in DEPLOYMENT_KINDS[state.kind]]
        return own, [], False
    if state.kind == METRICS:
        own.append(_guarded(lambda: check_metrics(server, client), CheckKind.METRICS, server=server))
    return own, [pool.submit(_deployment_job, pool, state, d) for d in deployments], True


def _deployment_job(pool: _Workers, state: _Pass, deployment: Deployment) -> list[Result]:
    client = pool.client(deployment.server)
    if state.kind == MODEL_CHECKS:
        # The schema of a version Triton does not serve is not there to compare: no schema result then.
        try:
            return check_ready_and_schema(client, deployment)
        except Exception:
            return [_guarded(lambda: check_ready(client, deployment), CheckKind.MODEL_READY, deployment=deployment)]
    if state.kind == LATENCY:
        return [_guarded(lambda: probe_latency(client, deployment), CheckKind.LATENCY, deployment=deployment)]
    if state.kind == STATS:

        def read():
            reading = check_stats(client, deployment, state.baselines.get(baseline_key(deployment)), state.now)
            if reading.counters is not None:
                state.counters[deployment.pk] = reading.counters
            return reading.result

        return [_guarded(read, CheckKind.STATS, deployment=deployment)]
    raise ValueError(f"pass {state.kind!r} has no deployment checks")


def _result(kind: str, deployment: Deployment, status: str, message: str) -> Result:
    return Result(
        kind,
        status,
        server_id=deployment.server_id,
        deployment_id=deployment.pk,
        version_id=deployment.version_id,
        message=message,
    )


def _guarded(check: Callable[[], Result], kind: str, *, server=None, deployment=None) -> Result:
    """Run one check; a bug in it fails that check's result, never the pass."""
    try:
        return check()
    except Exception as exc:
        target = deployment or server
        log.exception("%s check of %s failed", kind, target)
        message = f"the {kind} check of {target} failed: {type(exc).__name__}: {exc}"
        if deployment is not None:
            return _result(kind, deployment, Status.FAIL, message)
        return Result(kind, Status.FAIL, server_id=server.pk, message=message)
