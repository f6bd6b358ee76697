"""Beat's schedules are database rows: created when missing, never written over; tasks go to their queues."""

from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from modelhub.celery import QueueTimeLimits, app
from modelhub.monitoring.schedules import default_schedules, ensure_schedules

pytestmark = pytest.mark.django_db

EXPECTED = {
    "reconcile-all-servers": ("modelhub.serving.tasks.reconcile_all", 30),
    "discover-servers": ("modelhub.serving.discovery_tasks.discover_servers", 10),
    "server-health": ("modelhub.monitoring.tasks.health_pass", 30),
    "model-checks": ("modelhub.monitoring.tasks.model_checks_pass", 60),
    "latency-probe": ("modelhub.monitoring.tasks.latency_pass", 60),
    "triton-statistics": ("modelhub.monitoring.tasks.stats_pass", 60),
    "server-metrics": ("modelhub.monitoring.tasks.metrics_pass", 30),
    "accuracy": ("modelhub.monitoring.accuracy_tasks.accuracy_pass", 600),
    "drift": ("modelhub.monitoring.drift_tasks.drift_pass", 3600),
    "prune-samples": ("modelhub.monitoring.drift_tasks.prune_samples", 3600),
    "roll-up-and-prune": ("modelhub.monitoring.maintenance.roll_up_and_prune", 60),
    "send-notifications": ("modelhub.alerts.tasks.send_notifications", 10),
    "expire-old-rows": ("modelhub.serving.retention.expire_old_rows", 3600),
}


def rows() -> dict[str, tuple[str, int]]:
    return {t.name: (t.task, t.interval.every) for t in PeriodicTask.objects.select_related("interval")}


def edit(name: str, **changes) -> None:
    task = PeriodicTask.objects.get(name=name)
    for field, value in changes.items():
        setattr(task, field, value)
    task.save()


def test_migrate_creates_every_default_schedule_as_a_row():
    # The test database was migrated: post_migrate already made them.
    assert rows() == EXPECTED
    assert all(t.enabled and t.interval.period == IntervalSchedule.SECONDS for t in PeriodicTask.objects.all())
    health = PeriodicTask.objects.get(name="server-health")
    assert health.expire_seconds == 30  # a pass not picked up within its interval is dropped, not queued up


def test_ensure_schedules_keeps_what_an_admin_edited_and_recreates_only_the_missing(django_assert_max_num_queries):
    every_5s, _ = IntervalSchedule.objects.get_or_create(every=5, period=IntervalSchedule.SECONDS)
    edit("server-health", interval=every_5s)
    edit("latency-probe", enabled=False)
    PeriodicTask.objects.filter(name="accuracy").delete()

    assert ensure_schedules() == ["accuracy"]

    assert PeriodicTask.objects.get(name="server-health").interval.every == 5
    assert PeriodicTask.objects.get(name="latency-probe").enabled is False
    assert rows()["accuracy"] == EXPECTED["accuracy"]
    # Idempotent: a second call (every later migrate) writes nothing.
    with django_assert_max_num_queries(len(EXPECTED)):
        assert ensure_schedules() == []
    assert PeriodicTask.objects.count() == len(EXPECTED)


def test_a_later_migrate_does_not_undo_an_admin_edit():
    edit("reconcile-all-servers", enabled=False)
    call_command("migrate", verbosity=0, skip_checks=True)
    assert PeriodicTask.objects.get(name="reconcile-all-servers").enabled is False


@pytest.mark.django_db(transaction=True)  # the scheduler closes the connection, as beat does
def test_starting_beat_does_not_write_over_an_admin_edit():
    # The DatabaseScheduler copies CELERY_BEAT_SCHEDULE into the table when beat starts:
    # with an entry there, the admin's interval would be reset at every start.
    every_7s, _ = IntervalSchedule.objects.get_or_create(every=7, period=IntervalSchedule.SECONDS)
    edit("reconcile-all-servers", interval=every_7s)
    scheduler = DatabaseScheduler(app=app, lazy=False)
    assert scheduler.schedule["reconcile-all-servers"].schedule.run_every.total_seconds() == 7
    assert PeriodicTask.objects.get(name="reconcile-all-servers").interval.every == 7


def test_intervals_come_from_settings_when_first_created(settings):
    PeriodicTask.objects.all().delete()
    settings.RECONCILE_INTERVAL_S = 0.4  # whole seconds, never 0
    settings.MONITORING_HEALTH_INTERVAL_S = 12
    assert sorted(ensure_schedules()) == sorted(EXPECTED)
    assert rows()["reconcile-all-servers"][1] == 1
    assert rows()["server-health"][1] == 12


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("modelhub.serving.tasks.reconcile_server_task", "reconcile"),
        ("modelhub.serving.retention.expire_old_rows", "reconcile"),
        ("modelhub.serving.discovery_tasks.discover_servers", "checks"),  # a DNS lookup, never behind a load
        ("modelhub.monitoring.tasks.health_pass", "checks"),
        ("modelhub.monitoring.maintenance.roll_up_and_prune", "checks"),
        ("modelhub.monitoring.accuracy_tasks.accuracy_pass", "accuracy"),
        ("modelhub.alerts.tasks.send_notifications", "notify"),
        ("celery.backend_cleanup", "celery"),
    ],
)
def test_each_kind_of_task_goes_to_its_own_queue(task, queue, settings):
    assert app.amqp.router.route({}, task)["queue"].name == queue
    assert queue in settings.TASK_QUEUE_NAMES  # every worker command consumes it


def test_every_scheduled_task_lands_on_a_queue_workers_consume(settings):
    for schedule in default_schedules():
        assert app.amqp.router.route({}, schedule.task)["queue"].name in settings.TASK_QUEUE_NAMES


def test_a_queue_gives_its_time_limits_to_tasks_that_set_none(settings):
    import modelhub.serving.tasks  # noqa: F401 - registers the task with the app

    reconcile = app.tasks["modelhub.serving.tasks.reconcile_all"]
    assert (reconcile.soft_time_limit, reconcile.time_limit) == settings.TASK_TIME_LIMITS_BY_QUEUE["reconcile"]

    def task(name, soft=None, hard=None):
        return SimpleNamespace(name=name, soft_time_limit=soft, time_limit=hard)

    limits = QueueTimeLimits()
    assert limits.annotate(task("modelhub.monitoring.tasks.health_pass")) == {"soft_time_limit": 50, "time_limit": 60}
    # A task's own limit wins; the queue fills in only what it left out.
    assert limits.annotate(task("modelhub.monitoring.tasks.health_pass", soft=20, hard=25)) is None
    assert limits.annotate(task("modelhub.alerts.tasks.send_notifications", hard=30)) == {"soft_time_limit": 100}
    assert limits.annotate(task("somewhere.else")) is None  # the default queue: Celery's global limits
