"""The one Celery app, configured from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.app.routes import MapRoute

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")

app = Celery("modelhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class QueueTimeLimits:
    """Time limits by queue (settings.TASK_TIME_LIMITS_BY_QUEUE), for tasks that set none.

    A task annotation (CELERY_TASK_ANNOTATIONS): Celery applies it to every task class
    when the app binds it. The queue comes from CELERY_TASK_ROUTES through Celery's own
    matcher, so routes and limits cannot disagree. A limit given in a task's decorator wins.
    """

    def annotate(self, task) -> dict | None:
        from django.conf import settings

        route = MapRoute(settings.CELERY_TASK_ROUTES)(task.name) or {}
        limits = settings.TASK_TIME_LIMITS_BY_QUEUE.get(route.get("queue"))
        if limits is None:
            return None
        soft, hard = limits
        found = {}
        if task.soft_time_limit is None:
            found["soft_time_limit"] = soft
        if task.time_limit is None:
            found["time_limit"] = hard
        return found or None

    def annotate_any(self) -> None:
        return None
