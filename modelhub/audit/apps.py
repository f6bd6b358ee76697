from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "modelhub.audit"
    verbose_name = "Audit log"
