"""Django admin covers every model, and admin writes are audited."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse

from modelhub.audit.models import AuditEvent, Source
from modelhub.serving.models import InferenceServer

pytestmark = pytest.mark.django_db

MODELHUB_APPS = {"audit", "registry", "serving", "api"}


def test_every_modelhub_model_is_in_the_admin_and_its_list_page_loads(admin_client):
    models = [m for m in apps.get_models() if m._meta.app_label in MODELHUB_APPS]
    assert models
    for model in models:
        assert admin.site.is_registered(model), f"{model._meta.label} is not in the admin"
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert admin_client.get(url).status_code == 200, url


def test_adding_a_server_in_the_admin_writes_an_audit_row(admin_client, admin_user):
    response = admin_client.post(
        reverse("admin:serving_inferenceserver_add"),
        {"name": "gpu-a", "base_url": "http://triton-a:8000", "metrics_url": "", "enabled": "on",
         "labels": "[]", "backends": "[]"},
    )  # fmt: skip
    assert response.status_code == 302, response.content[:2000]
    server = InferenceServer.objects.get(name="gpu-a")
    event = AuditEvent.objects.get(action="inferenceserver.create")
    assert (event.source, event.user, event.object_id) == (Source.ADMIN, admin_user, str(server.pk))
