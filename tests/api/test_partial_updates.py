"""An update writes the fields it was asked to change, nothing else: what another
writer (the reconciler's health checks, a concurrent request) stored meanwhile in
the other fields survives."""

import pytest

from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent
from modelhub.registry.models import Model
from modelhub.registry.services import create_model, update_model
from modelhub.serving.models import InferenceServer
from modelhub.serving.services import create_server, update_server

pytestmark = pytest.mark.django_db


def test_updating_a_server_keeps_the_health_the_reconciler_wrote_meanwhile():
    server = create_server(Actor(), name="gpu-a", base_url="http://triton-a:8000")  # read at a request's start
    # Meanwhile the reconciler finds the server up (a conditional UPDATE, as it writes health).
    InferenceServer.objects.filter(pk=server.pk).update(live=True, ready=True, triton_version="2.59.0")
    update_server(server, Actor(), labels=["gpu"], enabled=False)
    fresh = InferenceServer.objects.get(pk=server.pk)
    assert (fresh.live, fresh.ready, fresh.triton_version) == (True, True, "2.59.0")
    assert (fresh.labels, fresh.enabled) == (["gpu"], False)
    assert AuditEvent.objects.get(action="inferenceserver.update").details == {"fields": ["enabled", "labels"]}


def test_updating_a_server_over_the_api_keeps_its_health(admin_api):
    server = create_server(Actor(), name="gpu-a", base_url="http://triton-a:8000")
    InferenceServer.objects.filter(pk=server.pk).update(live=False, last_error="connection refused")
    response = admin_api.patch("/api/v1/servers/gpu-a/", {"labels": ["staging"]}, format="json")
    assert response.status_code == 200, response.json()
    fresh = InferenceServer.objects.get(pk=server.pk)
    assert (fresh.live, fresh.last_error, fresh.labels) == (False, "connection refused", ["staging"])


def test_updating_a_model_keeps_a_field_another_request_wrote_meanwhile():
    model = create_model(Actor(), name="digits", description="old")
    stale = Model.objects.get(pk=model.pk)
    update_model(Model.objects.get(pk=model.pk), Actor(), task_kind="classification")  # another request
    update_model(stale, Actor(), description="new")
    fresh = Model.objects.get(pk=model.pk)
    assert (fresh.description, fresh.task_kind) == ("new", "classification")
    assert fresh.updated_at > model.updated_at


def test_a_field_given_is_written_even_when_the_stale_copy_already_had_it():
    # Last writer wins on the fields it names: "set it back to old" must not be lost.
    model = create_model(Actor(), name="digits", description="old")
    stale = Model.objects.get(pk=model.pk)
    update_model(Model.objects.get(pk=model.pk), Actor(), description="changed meanwhile")
    update_model(stale, Actor(), description="old")
    assert Model.objects.get(pk=model.pk).description == "old"
