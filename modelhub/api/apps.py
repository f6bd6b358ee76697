from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "modelhub.api"
    verbose_name = "REST API"
