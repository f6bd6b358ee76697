from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "modelhub.monitoring"
    verbose_name = "Monitoring (checks, results, time series)"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from modelhub.monitoring.schedules import ensure_schedules_after_migrate

        # Beat's schedules are rows (django-celery-beat): the defaults appear after each migrate.
        post_migrate.connect(ensure_schedules_after_migrate, sender=self, dispatch_uid="monitoring.ensure_schedules")

        from modelhub.monitoring.checks import memory
        from modelhub.serving.signals import model_change_finished, model_change_starting

        # Server memory around every load and unload the reconciler makes (serving sends, monitoring listens).
        model_change_starting.connect(memory.before_model_change, dispatch_uid="monitoring.memory.before")
        model_change_finished.connect(memory.after_model_change, dispatch_uid="monitoring.memory.after")
