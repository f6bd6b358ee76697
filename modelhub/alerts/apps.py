from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "modelhub.alerts"
    verbose_name = "Alerts (rules, state, notifications)"

    def ready(self) -> None:
        from modelhub.alerts import receivers  # noqa: F401 - connects the evaluation to results_recorded
