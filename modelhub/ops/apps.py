from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "modelhub.ops"
    label = "ops"

    def ready(self) -> None:
        from celery.signals import worker_ready

        from modelhub.ops import metrics, worker_metrics

        metrics.connect_signals()
        worker_ready.connect(worker_metrics.serve, dispatch_uid="ops-worker-metrics")
