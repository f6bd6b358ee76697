"""Django admin covers every model, and its writes go through the service functions.

Each rule the API keeps holds in the admin too: a model's name (its Triton name),
a version's schema and config, and history rows cannot be edited; alias moves
leave AliasMove rows; deletes that would strand something on Triton are refused
with the service's reason; every write is an AuditEvent with source=admin.
"""

from pathlib import Path

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.urls import reverse

from modelhub.audit.models import AuditEvent, Source
from modelhub.registry.models import Alias, AliasMove, Model, ModelVersion, TensorSpec
from modelhub.registry.services import get_or_create_model, move_alias, register_version
from modelhub.serving.models import Deployment, DeploymentTransition, InferenceServer
from modelhub.serving.services import request_deploy, request_undeploy

pytestmark = pytest.mark.django_db

MODELHUB_APPS = {"audit", "registry", "serving", "api", "alerts"}


def url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def form_data(response) -> dict:
    """What the change form would post back unchanged: its fields and its inlines' forms."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data = {}
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value
    return data


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def admin_events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, source=Source.ADMIN))


@pytest.fixture
def version(doubler_zip, manifest, actor):
    """version(number) -> a registered doubler version of model "digits"."""

    def make(number: int = 1, model: str = "digits") -> ModelVersion:
        registered = get_or_create_model(model, actor)
        artifact = doubler_zip(factor=number + 1, name=f"{model}-{number}.zip")
        return register_version(registered, artifact, manifest, actor).version

    return make


@pytest.fixture
def server(db):
    return InferenceServer.objects.create(name="dead", base_url="http://127.0.0.1:9")


def test_every_modelhub_model_is_in_the_admin_and_its_list_page_loads(admin_client):
    models = [m for m in apps.get_models() if m._meta.app_label in MODELHUB_APPS]
    assert models
    for model in models:
        assert admin.site.is_registered(model), f"{model._meta.label} is not in the admin"
        assert admin_client.get(url(model, "changelist")).status_code == 200, model


def test_every_change_page_loads(admin_client, version, server, actor):
    v1 = version(1)
    move_alias(v1.model, "production", v1, actor)
    (deployment,) = request_deploy(v1, [server], actor)
    for obj in [v1.model, v1, v1.tensors.first(), Alias.objects.get(), AliasMove.objects.get(), server, deployment]:
        assert admin_client.get(url(obj, "change", obj.pk)).status_code == 200, obj


# --- servers --------------------------------------------------------------------


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


def test_changing_a_server_writes_only_the_changed_fields(admin_client, server):
    page = admin_client.get(url(server, "change", server.pk))
    InferenceServer.objects.filter(pk=server.pk).update(live=True, last_error="")  # the reconciler, meanwhile
    data = {**form_data(page), "labels": '["gpu"]'}
    assert admin_client.post(url(server, "change", server.pk), data).status_code == 302
    server.refresh_from_db()
    assert (server.labels, server.live) == (["gpu"], True)
    (event,) = admin_events("inferenceserver.update")
    assert event.details == {"fields": ["labels"]}


def test_a_server_with_a_deployment_meant_to_be_loaded_cannot_be_deleted(admin_client, version, server, actor):
    request_deploy(version(1), [server], actor)
    page = admin_client.get(url(server, "delete", server.pk))
    assert page.status_code == 200
    reason = "server 'dead' has deployments meant to be loaded: digits v1 (desired loaded, observed pending)"
    assert any(m.startswith(reason) for m in messages_of(page))
    assert admin_client.post(url(server, "delete", server.pk), {"post": "yes"}).status_code == 200  # refused again
    assert InferenceServer.objects.filter(pk=server.pk).exists()
    assert not admin_events("inferenceserver.delete")


def test_deleting_a_server_goes_through_the_service(admin_client, version, server, actor):
    (deployment,) = request_undeploy(version(1), [server], actor)
    DeploymentTransition.objects.create(deployment=deployment, from_state="pending", to_state="unloaded")
    response = admin_client.post(url(server, "delete", server.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not InferenceServer.objects.exists()
    assert not Deployment.objects.exists()
    assert not DeploymentTransition.objects.exists()
    (event,) = admin_events("inferenceserver.delete")
    assert event.details == {"deployments": 1}


# --- models ---------------------------------------------------------------------


def test_adding_a_model_goes_through_create_model(admin_client, admin_user):
    response = admin_client.post(url(Model, "add"), {"name": "digits", "description": "d", "task_kind": "regression"})
    assert response.status_code == 302, response.content[:2000]
    model = Model.objects.get(name="digits")
    assert (model.description, model.task_kind) == ("d", "regression")
    (event,) = admin_events("model.create")
    assert (event.user, event.object_id) == (admin_user, str(model.pk))


def test_a_models_name_cannot_be_changed(admin_client, version):
    model = version(1).model
    data = {**form_data(admin_client.get(url(model, "change", model.pk))), "name": "renamed", "description": "new"}
    assert admin_client.post(url(model, "change", model.pk), data).status_code == 302
    model.refresh_from_db()
    assert (model.name, model.description) == ("digits", "new")
    (event,) = admin_events("model.update")
    assert event.details == {"fields": ["description"]}


def test_a_deployed_model_cannot_be_deleted(admin_client, version, server, actor):
    v1 = version(1)
    request_deploy(v1, [server], actor)
    page = admin_client.get(url(Model, "delete", v1.model.pk))
    assert "model 'digits' is deployed: digits v1 on dead (desired loaded, observed pending); undeploy it first" in (
        messages_of(page)
    )
    assert admin_client.post(url(Model, "delete", v1.model.pk), {"post": "yes"}).status_code == 200
    assert Model.objects.exists() and Deployment.objects.exists()
    assert not admin_events("model.delete")


def test_deleting_a_model_goes_through_the_service(
    admin_client, version, server, actor, artifact_root, django_capture_on_commit_callbacks
):
    v1 = version(1)
    move_alias(v1.model, "production", v1, actor)
    request_undeploy(v1, [server], actor)  # an undeployed deployment row goes with the model
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url(Model, "delete", v1.model.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not Model.objects.exists() and not Deployment.objects.exists() and not Alias.objects.exists()
    assert admin_events("model.delete")
    assert list(Path(artifact_root).iterdir()) == []  # no file, no empty model folder


def test_bulk_deleting_models_is_all_or_nothing(admin_client, version, server, actor):
    request_deploy(version(1, model="digits"), [server], actor)
    version(1, model="faces")
    ids = [str(pk) for pk in Model.objects.values_list("pk", flat=True)]
    data = {"action": "delete_selected", ACTION_CHECKBOX_NAME: ids, "post": "yes"}
    response = admin_client.post(url(Model, "changelist"), data)
    assert response.status_code == 200  # the confirmation page, saying why not
    assert any(m.startswith("model 'digits' is deployed") for m in messages_of(response))
    assert Model.objects.count() == 2


# --- versions -------------------------------------------------------------------


def test_a_versions_schema_and_config_cannot_be_edited(admin_client, version):
    v1 = version(1)
    tensor = v1.tensors.get(direction="input")
    data = form_data(admin_client.get(url(v1, "change", v1.pk)))
    data.update(backend="onnxruntime", max_batch_size="64", triton_config='{"instance_group": []}')
    data.update(git_commit="abc123")
    tensor_fields = [key for key, value in data.items() if key.startswith("tensors-") and value == tensor.name]
    for key in tensor_fields:
        data[key] = "renamed"
    assert admin_client.post(url(v1, "change", v1.pk), data).status_code == 302
    fresh = ModelVersion.objects.get(pk=v1.pk)
    assert (fresh.backend, fresh.max_batch_size, fresh.triton_config, fresh.git_commit) == (
        v1.backend,
        v1.max_batch_size,
        v1.triton_config,
        "abc123",
    )
    assert TensorSpec.objects.get(pk=tensor.pk).name == tensor.name
    (event,) = admin_events("version.update")
    assert event.details == {"fields": ["git_commit"]}


def test_versions_and_tensors_cannot_be_added_by_hand(admin_client, version):
    v1 = version(1)
    assert admin_client.get(url(ModelVersion, "add")).status_code == 403
    assert admin_client.get(url(TensorSpec, "add")).status_code == 403
    tensor = v1.tensors.first()
    assert admin_client.post(url(tensor, "change", tensor.pk), {"name": "x"}).status_code == 403
    assert admin_client.post(url(tensor, "delete", tensor.pk), {"post": "yes"}).status_code == 403
    assert TensorSpec.objects.get(pk=tensor.pk).name == tensor.name


def test_a_version_behind_an_alias_cannot_be_deleted(admin_client, version, actor):
    v1 = version(1)
    move_alias(v1.model, "production", v1, actor)
    page = admin_client.get(url(v1, "delete", v1.pk))
    assert "digits v1 is behind the alias production: move or drop the alias first" in messages_of(page)
    assert admin_client.post(url(v1, "delete", v1.pk), {"post": "yes"}).status_code == 200
    assert ModelVersion.objects.exists()


def test_deleting_a_version_goes_through_the_service(admin_client, version):
    v1, v2 = version(1), version(2)
    assert admin_client.post(url(v2, "delete", v2.pk), {"post": "yes"}).status_code == 302
    assert list(ModelVersion.objects.values_list("pk", flat=True)) == [v1.pk]
    (event,) = admin_events("version.delete")
    assert event.object_id == str(v2.pk)


# --- aliases --------------------------------------------------------------------


def test_alias_moves_in_the_admin_are_kept_as_alias_moves(admin_client, version, admin_user):
    v1, v2 = version(1), version(2)
    response = admin_client.post(url(Alias, "add"), {"model": v1.model.pk, "name": "production", "version": v1.pk})
    assert response.status_code == 302, response.content[:2000]
    alias = Alias.objects.get()

    data = {**form_data(admin_client.get(url(alias, "change", alias.pk))), "version": v2.pk, "name": "renamed"}
    assert admin_client.post(url(alias, "change", alias.pk), data).status_code == 302
    alias.refresh_from_db()
    assert (alias.name, alias.version) == ("production", v2)

    assert admin_client.post(url(alias, "delete", alias.pk), {"post": "yes"}).status_code == 302
    assert not Alias.objects.exists()
    moves = [(m.from_version, m.to_version, m.moved_by) for m in AliasMove.objects.order_by("id")]
    who = f"user:{admin_user.username}"
    assert moves == [(None, v1, who), (v1, v2, who), (v2, None, who)]
    assert [e.action for e in AuditEvent.objects.filter(source=Source.ADMIN).order_by("id")] == [
        "alias.move",
        "alias.move",
        "alias.delete",
    ]


def test_an_alias_cannot_point_at_another_models_version(admin_client, version):
    digits, faces = version(1), version(1, model="faces")
    data = {"model": digits.model.pk, "name": "production", "version": faces.pk}
    response = admin_client.post(url(Alias, "add"), data)
    assert response.status_code == 200
    assert "faces v1 is not a version of digits" in response.content.decode()
    assert not Alias.objects.exists() and not AliasMove.objects.exists()


def test_alias_history_cannot_be_written_by_hand(admin_client, version, actor):
    v1 = version(1)
    move_alias(v1.model, "production", v1, actor)
    move = AliasMove.objects.get()
    assert admin_client.get(url(AliasMove, "add")).status_code == 403
    assert admin_client.post(url(move, "delete", move.pk), {"post": "yes"}).status_code == 403
    assert AliasMove.objects.exists()


# --- deployments ----------------------------------------------------------------


def test_deploying_in_the_admin_goes_through_request_deploy(admin_client, version, server):
    v1 = version(1)
    response = admin_client.post(url(Deployment, "add"), {"version": v1.pk, "server": server.pk, "desired": "loaded"})
    assert response.status_code == 302, response.context["adminform"].form.errors or [
        fs.formset.non_form_errors() for fs in response.context["inline_admin_formsets"]
    ]
    deployment = Deployment.objects.get()
    assert (deployment.version, deployment.server, deployment.desired) == (v1, server, "loaded")
    assert admin_events("deployment.deploy")


def test_a_deployment_meant_to_be_loaded_cannot_be_deleted(admin_client, version, server, actor):
    (deployment,) = request_deploy(version(1), [server], actor)
    page = admin_client.get(url(deployment, "delete", deployment.pk))
    assert any("still deployed; undeploy it first" in m for m in messages_of(page))
    assert admin_client.post(url(deployment, "delete", deployment.pk), {"post": "yes"}).status_code == 200
    assert Deployment.objects.exists()


def test_an_undeployed_deployment_can_be_deleted(admin_client, version, server, actor):
    (deployment,) = request_undeploy(version(1), [server], actor)
    assert admin_client.post(url(deployment, "delete", deployment.pk), {"post": "yes"}).status_code == 302
    assert not Deployment.objects.exists()
    assert admin_events("deployment.delete")


def test_a_deployments_version_and_server_cannot_be_changed(admin_client, version, server, actor):
    v1, v2 = version(1), version(2)
    (deployment,) = request_deploy(v1, [server], actor)
    data = {**form_data(admin_client.get(url(deployment, "change", deployment.pk))), "version": v2.pk}
    data["desired"] = "unloaded"
    assert admin_client.post(url(deployment, "change", deployment.pk), data).status_code == 302
    (deployment,) = Deployment.objects.all()
    assert (deployment.version, deployment.desired) == (v1, "unloaded")
    assert admin_events("deployment.undeploy")


def test_transitions_cannot_be_written_by_hand(admin_client, version, server, actor):
    (deployment,) = request_deploy(version(1), [server], actor)
    transition = DeploymentTransition.objects.create(deployment=deployment, from_state="pending", to_state="failed")
    assert admin_client.post(url(transition, "delete", transition.pk), {"post": "yes"}).status_code == 403
    assert DeploymentTransition.objects.exists()
