from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "modelhub.demo"
    verbose_name = "Demo"
