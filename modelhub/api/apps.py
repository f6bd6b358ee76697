from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "modelhub.api"
    verbose_name = "REST API"

    def ready(self) -> None:
        from modelhub.api import schema  # noqa: F401  (registers the OpenAPI auth extension)
