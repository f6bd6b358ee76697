"""Retention of deployment transitions and audit events: off by default, batched, idempotent, scheduled."""

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from modelhub.audit.actors import Actor
from modelhub.audit.log import record
from modelhub.audit.models import AuditEvent
from modelhub.celery import app
from modelhub.registry.services import register_upload
from modelhub.serving.models import Deployment, DeploymentTransition, InferenceServer
from modelhub.serving.retention import expire_old_rows
from tests.conftest import doubler_source, make_zip
from tests.test_settings import start_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows(tmp_path, actor, manifest):
    """Five transitions and five audit events of 100 days ago, two of each of an hour ago."""
    artifact = make_zip(tmp_path / "m.zip", {"1/model.py": doubler_source(2)})
    version = register_upload("kept", artifact, manifest, actor, create=True).version
    server = InferenceServer.objects.create(name="dead", base_url="http://127.0.0.1:9")
    deployment = Deployment.objects.create(version=version, server=server)
    AuditEvent.objects.all().delete()  # only the rows below
    for age, n in ((timedelta(days=100), 5), (timedelta(hours=1), 2)):
        transitions = [
            DeploymentTransition.objects.create(deployment=deployment, from_state="pending", to_state="failed")
        ]
        transitions += [
            DeploymentTransition.objects.create(deployment=deployment, from_state="failed", to_state="failed")
            for _ in range(n - 1)
        ]
        events = [record(Actor(), "test.event", version) for _ in range(n)]
        DeploymentTransition.objects.filter(pk__in=[t.pk for t in transitions]).update(created_at=timezone.now() - age)
        AuditEvent.objects.filter(pk__in=[e.pk for e in events]).update(created_at=timezone.now() - age)
    return deployment


def test_retention_is_off_by_default_and_keeps_everything(rows):
    assert django_settings.RETENTION_DAYS_TRANSITIONS is None
    assert django_settings.RETENTION_DAYS_AUDIT is None
    expired = expire_old_rows()
    assert (expired.transitions, expired.audit_events) == (0, 0)
    assert DeploymentTransition.objects.count() == 7
    assert AuditEvent.objects.count() == 7


def test_old_rows_are_deleted_in_batches_and_the_log_says_so(rows, settings, django_assert_max_num_queries):
    settings.RETENTION_DAYS_TRANSITIONS = 30
    settings.RETENTION_DAYS_AUDIT = 90
    settings.RETENTION_BATCH_SIZE = 2  # five old rows: three batches per table
    expired = expire_old_rows()
    assert (expired.transitions, expired.audit_events) == (5, 5)
    recent = timezone.now() - timedelta(days=1)
    assert not DeploymentTransition.objects.filter(created_at__lt=recent).exists()
    assert DeploymentTransition.objects.count() == 2
    assert list(AuditEvent.objects.filter(created_at__lt=recent)) == []
    (note,) = AuditEvent.objects.filter(action="audit.expire")
    assert (note.actor, note.details["deleted"]) == ("system", 5)
    assert AuditEvent.objects.count() == 2 + 1

    # Idempotent: the second run finds nothing, deletes nothing and notes nothing.
    with django_assert_max_num_queries(2):
        again = expire_old_rows()
    assert (again.transitions, again.audit_events) == (0, 0)
    assert AuditEvent.objects.count() == 3


def test_each_setting_governs_its_own_table(rows, settings):
    settings.RETENTION_DAYS_TRANSITIONS = 30
    assert expire_old_rows().transitions == 5
    assert AuditEvent.objects.count() == 7


def test_the_task_is_scheduled_and_registered_with_celery(rows, settings):
    settings.RETENTION_DAYS_TRANSITIONS = 30
    # Schedules are rows (modelhub/monitoring/schedules.py), made when the test database was migrated.
    (entry,) = PeriodicTask.objects.filter(task__contains="retention", enabled=True)
    assert entry.interval.every == 3600
    app.loader.import_default_modules()  # what a worker does at start
    assert app.tasks[entry.task].apply().get() == {"transitions": 5, "audit_events": 0}


@pytest.mark.parametrize("value", ["0", "a month"])
def test_a_wrong_retention_stops_the_start_naming_the_variable(value, tmp_path):
    result = start_with(MODELHUB_RETENTION_DAYS_AUDIT=value, MODELHUB_VAR_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "MODELHUB_RETENTION_DAYS_AUDIT" in result.stderr.splitlines()[-1]
