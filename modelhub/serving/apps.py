from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "modelhub.serving"
    verbose_name = "Serving (Triton servers and deployments)"
