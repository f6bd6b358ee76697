from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "modelhub.registry"
    verbose_name = "Model registry"
