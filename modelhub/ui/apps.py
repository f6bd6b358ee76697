from django.apps import AppConfig


class UiConfig(AppConfig):
    name = "modelhub.ui"
    verbose_name = "Operator UI"
