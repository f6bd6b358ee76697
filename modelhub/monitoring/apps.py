from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "modelhub.monitoring"
    verbose_name = "Monitoring (checks, results, time series)"
