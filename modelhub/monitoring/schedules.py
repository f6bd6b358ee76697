"""The periodic tasks beat runs, as rows an operator edits in the admin.

Beat runs django-celery-beat's DatabaseScheduler: every schedule is a PeriodicTask row
(Admin → Periodic tasks), read again whenever one changes. ensure_schedules() creates
the default rows after each migrate, each only if no row of its name exists: an
interval an admin changed, or a task an admin disabled, stays as the admin left it.
(A deleted row comes back at the next migrate; disable a schedule rather than delete it.)

The defaults are not in CELERY_BEAT_SCHEDULE: the scheduler writes those entries over
the rows at every beat start. A task name that no worker knows yet breaks nothing:
beat sends it and the worker logs it as unregistered.
"""

import logging
import math
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connections, transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from modelhub.audit.actors import Actor
from modelhub.audit.log import record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DefaultSchedule:
    name: str  # the PeriodicTask's name: the key that says "this one exists already"
    task: str
    every_s: float
    description: str

    @property
    def every(self) -> int:
        # IntervalSchedule counts whole seconds; never 0, which would send without pause.
        return max(1, math.ceil(self.every_s))


def _interval(name: str, default: float) -> float:
    # Interval settings belong to the apps that run the passes; until one exists, its default.
    return float(getattr(settings, name, default))


def default_schedules() -> list[DefaultSchedule]:
    return [
        DefaultSchedule(
            "reconcile-all-servers",
            "modelhub.serving.tasks.reconcile_all",
            settings.RECONCILE_INTERVAL_S,
            "Loads and unloads what deployments ask for; restores the models of a restarted Triton.",
        ),
        DefaultSchedule(
            "discover-servers",
            "modelhub.serving.discovery_tasks.discover_servers",
            settings.DISCOVERY_INTERVAL_S,
            "Server groups due (each has its own interval): DNS answers become servers; gone addresses drain.",
        ),
        DefaultSchedule(
            "server-health",
            "modelhub.monitoring.tasks.health_pass",
            _interval("MONITORING_HEALTH_INTERVAL_S", 30),
            "Every server: live, ready, metadata.",
        ),
        DefaultSchedule(
            "model-checks",
            "modelhub.monitoring.tasks.model_checks_pass",
            _interval("MONITORING_MODEL_CHECKS_INTERVAL_S", 60),
            "Every deployment meant to be loaded: readiness with Triton's reason, schema conformance.",
        ),
        DefaultSchedule(
            "latency-probe",
            "modelhub.monitoring.tasks.latency_pass",
            _interval("MONITORING_LATENCY_INTERVAL_S", 60),
            "Requests generated from each loaded version's schema: p50/p95/p99 against the model's SLO.",
        ),
        DefaultSchedule(
            "triton-statistics",
            "modelhub.monitoring.tasks.stats_pass",
            _interval("MONITORING_STATS_INTERVAL_S", 60),
            "Triton's per-model statistics turned into per-interval points.",
        ),
        DefaultSchedule(
            "server-metrics",
            "modelhub.monitoring.tasks.metrics_pass",
            _interval("MONITORING_METRICS_INTERVAL_S", 30),
            "Each server's metrics endpoint: CPU, memory, GPU where present.",
        ),
        DefaultSchedule(
            "accuracy",
            "modelhub.monitoring.accuracy_tasks.accuracy_pass",
            600,  # finds versions with no result at once; MONITORING_ACCURACY_INTERVAL_S says how old one may get
            "Evaluation sets through Triton for loaded versions whose last result is old or missing.",
        ),
        DefaultSchedule(
            "drift",
            "modelhub.monitoring.drift_tasks.drift_pass",
            settings.DRIFT_WINDOW_S,
            "Drift (PSI, KS, outputs' JS) and live accuracy of the last complete window's samples, per version.",
        ),
        DefaultSchedule(
            "prune-samples",
            "modelhub.monitoring.drift_tasks.prune_samples",
            3600,
            "Sampled requests and prediction logs past MODELHUB_MONITORING_SAMPLE_RETENTION_DAYS deleted.",
        ),
        DefaultSchedule(
            "roll-up-and-prune",
            "modelhub.monitoring.maintenance.roll_up_and_prune",
            60,
            "Points rolled up per minute and hour; raw points, roll-ups and results past retention deleted.",
        ),
        DefaultSchedule(
            "send-notifications",
            "modelhub.alerts.tasks.send_notifications",
            _interval("ALERT_SEND_INTERVAL_S", 10),  # a backstop: each flip also sends at once, on commit
            "Alert emails for unsent transitions (also sent right after each flip); reminders.",
        ),
        DefaultSchedule(
            "expire-old-rows",
            "modelhub.serving.retention.expire_old_rows",
            3600,
            "Deployment transitions and audit events past MODELHUB_RETENTION_DAYS_*; nothing when unset.",
        ),
    ]


def _interval_schedule(every: int, using: str) -> IntervalSchedule:
    # No unique constraint on (every, period): an admin may have made a twin; take the first.
    rows = IntervalSchedule.objects.using(using)
    found = rows.filter(every=every, period=IntervalSchedule.SECONDS).order_by("pk").first()
    return found or rows.create(every=every, period=IntervalSchedule.SECONDS)


def ensure_schedules(using: str = "default") -> list[str]:
    """Create each default PeriodicTask that does not exist (by name); return the names created."""
    created = []
    for schedule in default_schedules():
        if PeriodicTask.objects.using(using).filter(name=schedule.name).exists():
            continue
        with transaction.atomic(using=using):
            _, made = PeriodicTask.objects.using(using).get_or_create(
                name=schedule.name,
                defaults={
                    "task": schedule.task,
                    "interval": _interval_schedule(schedule.every, using),
                    # A pass nobody picked up within its interval is dropped: the next one is
                    # already due, and a worker back after an outage should not run a backlog.
                    "expire_seconds": schedule.every,
                    "description": schedule.description,
                },
            )
        if made:
            created.append(schedule.name)
    if created:
        log.info("schedules created: %s", ", ".join(created))
    return created


def ensure_schedules_after_migrate(sender, using: str = "default", **kwargs) -> None:
    """post_migrate receiver (MonitoringConfig.ready)."""
    # Not after `migrate django_celery_beat zero`: there is no table to write to.
    if PeriodicTask._meta.db_table in connections[using].introspection.table_names():
        ensure_schedules(using)


# Bounds of an interval a person may set: beat cannot send more often than every second,
# and a check that runs less than once a week no longer tells anyone anything.
MIN_EVERY_S = 1
MAX_EVERY_S = 7 * 24 * 3600


def every_seconds(task: PeriodicTask) -> int | None:
    """The task's interval in seconds, whatever unit its IntervalSchedule counts in; None without one."""
    if task.interval is None:
        return None
    return int(timedelta(**{task.interval.period: task.interval.every}).total_seconds())


def update_schedule(task: PeriodicTask, actor: Actor, *, every_s: int | None, enabled: bool) -> PeriodicTask:
    """Set a schedule's interval (whole seconds; None keeps it) and whether it runs, audited.

    IntervalSchedule rows are shared: "every 30 s" may drive several tasks, so the task is
    pointed at a row of the new period rather than that row being edited.
    """
    if every_s is not None and not MIN_EVERY_S <= every_s <= MAX_EVERY_S:
        raise ValueError(f"every_s: {every_s} is not from {MIN_EVERY_S} to {MAX_EVERY_S} seconds")
    with transaction.atomic():
        task = PeriodicTask.objects.select_for_update(of=("self",)).select_related("interval").get(pk=task.pk)
        changed = {}
        if every_s is not None and every_s != every_seconds(task):
            changed["every_s"] = _point_at_interval(task, every_s)
        if enabled != task.enabled:
            task.enabled = enabled
            changed["enabled"] = {"from": not enabled, "to": enabled}
        if changed:
            task.save()  # save(), not update(): it tells beat's DatabaseScheduler to read the rows again
            record(actor, "schedule.update", task, schedule=task.name, task=task.task, changes=changed)
    return task


def _point_at_interval(task: PeriodicTask, every_s: int) -> dict:
    before = every_seconds(task)
    if before is None:
        raise ValueError(
            f"every_s: {task.name!r} does not run on an interval (a crontab, solar or clocked "
            "schedule): change it in the admin"
        )
    # An expiry equal to the old interval meant "drop a pass not picked up in time": it follows the interval.
    if task.expire_seconds == before:
        task.expire_seconds = every_s
    task.interval = _interval_schedule(every_s, "default")
    return {"from": before, "to": every_s}
