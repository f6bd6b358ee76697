from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "modelhub.alerts"
    verbose_name = "Alerts (rules, state, notifications)"
