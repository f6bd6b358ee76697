"""Admin of servers and deployments, and of models and versions.

Models and versions are here, not in the registry's admin, because deleting
them must know where they run (serving sits above the registry). Every write
goes through the same service functions as the API.
"""

from django.contrib import admin, messages

from modelhub.access.roles import Scope
from modelhub.audit.admin import ServiceAdmin
from modelhub.audit.log import record
from modelhub.registry.admin import ReadOnlyAdminMixin, TensorSpecInline
from modelhub.registry.models import Model, ModelVersion
from modelhub.registry.services import VERSION_PROVENANCE_FIELDS, InUse, create_model, update_model, update_version
from modelhub.serving.discovery import GROUP_FIELDS, create_group, delete_group, update_group
from modelhub.serving.discovery_tasks import sync_group_task
from modelhub.serving.models import Deployment, DeploymentTransition, DesiredState, InferenceServer, ServerGroup
from modelhub.serving.services import (
    SERVER_FIELDS,
    create_server,
    delete_deployment,
    delete_model,
    delete_server,
    delete_version,
    request_deploy,
    request_undeploy,
    update_server,
)
from modelhub.serving.tasks import reconcile_server_task
from modelhub.taskqueue import BrokerError, TaskQueueUnavailable, broker_description

MODEL_FIELDS = {"description", "task_kind"}


def _changes(form, fields) -> dict:
    return {name: form.cleaned_data[name] for name in form.changed_data if name in fields}


@admin.register(Model)
class ModelAdmin(ServiceAdmin):
    write_scope, delete_scope = Scope.UPLOAD, Scope.ADMIN  # as the API
    list_display = ["name", "task_kind", "created_at"]
    list_filter = ["task_kind"]
    search_fields = ["name", "description"]
    filter_horizontal = ["owners"]
    refusals = (InUse,)

    def get_readonly_fields(self, request, obj=None):
        # The name is the model's name on Triton: renaming would orphan what is loaded there.
        return ["name", "created_at", "updated_at"] if obj is not None else ["created_at", "updated_at"]

    def create(self, request, obj, form):
        fields = {name: form.cleaned_data[name] for name in MODEL_FIELDS if name in form.cleaned_data}
        return create_model(self.actor(request), name=obj.name, **fields)

    def update(self, request, obj, form):
        update_model(Model.objects.get(pk=obj.pk), self.actor(request), **_changes(form, MODEL_FIELDS))

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if change and "owners" in form.changed_data:
            record(self.actor(request), "model.update", form.instance, fields=["owners"])

    def delete(self, request, obj):
        delete_model(obj, self.actor(request))


class VersionDeploymentInline(ReadOnlyAdminMixin, admin.TabularInline):
    # Where the version runs: what stops it from being deleted.
    model = Deployment
    extra = 0
    fields = ["server", "desired", "observed", "observed_at", "last_error"]
    readonly_fields = fields


@admin.register(ModelVersion)
class ModelVersionAdmin(ServiceAdmin):
    write_scope, delete_scope = Scope.UPLOAD, Scope.ADMIN  # as the API
    list_display = ["model", "number", "backend", "platform", "max_batch_size", "size", "created_at", "created_by"]
    list_filter = ["backend", "platform"]
    search_fields = ["model__name", "sha256", "git_commit"]
    list_select_related = ["model", "created_by"]
    inlines = [TensorSpecInline, VersionDeploymentInline]
    refusals = (InUse,)
    # Bytes, schema and config are what was uploaded and what deploys check against:
    # only provenance (git commit, CI run, metadata) may be corrected by hand.
    readonly_fields = [
        "model",
        "number",
        "artifact",
        "artifact_format",
        "sha256",
        "size",
        "version_files",
        "model_files",
        "backend",
        "platform",
        "max_batch_size",
        "triton_config",
        "created_by",
        "created_at",
    ]

    def has_add_permission(self, request):
        return False  # versions are uploaded (POST /api/v1/models/{name}/versions/)

    def update(self, request, obj, form):
        update_version(
            ModelVersion.objects.get(pk=obj.pk), self.actor(request), **_changes(form, VERSION_PROVENANCE_FIELDS)
        )

    def delete(self, request, obj):
        delete_version(obj, self.actor(request))


@admin.register(InferenceServer)
class InferenceServerAdmin(ServiceAdmin):
    list_display = ["name", "base_url", "enabled", "live", "ready", "triton_version", "last_seen_at"]
    list_filter = ["enabled", "live", "ready"]
    search_fields = ["name", "base_url"]
    readonly_fields = [
        "live",
        "ready",
        "last_seen_at",
        "last_checked_at",
        "last_error",
        "triton_version",
        "extensions",
        "group",
        "address",
        "drained_at",
    ]
    actions = ["reconcile_now"]
    refusals = (InUse,)

    @admin.action(description="Reconcile selected servers now", permissions=["deploy_role"])
    def reconcile_now(self, request, queryset):
        try:
            for server in queryset:
                reconcile_server_task.delay(server.pk)
        except BrokerError as exc:  # nothing to record: the periodic pass reconciles every server anyway
            messages.error(request, f"the task queue ({broker_description()}) is unreachable: {exc}")
            return
        messages.info(request, f"Reconciliation queued for {queryset.count()} server(s).")

    def create(self, request, obj, form):
        fields = {name: form.cleaned_data[name] for name in SERVER_FIELDS if name in form.cleaned_data}
        return create_server(self.actor(request), **fields)

    def update(self, request, obj, form):
        update_server(InferenceServer.objects.get(pk=obj.pk), self.actor(request), **_changes(form, SERVER_FIELDS))

    def delete(self, request, obj):
        delete_server(obj, self.actor(request))


class GroupServerInline(ReadOnlyAdminMixin, admin.TabularInline):
    # The servers discovery keeps for the group's addresses: what stops it from being deleted.
    model = InferenceServer
    extra = 0
    fields = ["name", "address", "live", "drained_at"]
    readonly_fields = fields


@admin.register(ServerGroup)
class ServerGroupAdmin(ServiceAdmin):
    list_display = ["name", "dns_name", "port", "enabled", "interval_s", "last_resolved_at", "last_error"]
    list_filter = ["enabled"]
    search_fields = ["name", "dns_name"]
    readonly_fields = ["addresses", "last_resolved_at", "last_error", "created_at"]
    inlines = [GroupServerInline]
    actions = ["resolve_now"]
    refusals = (InUse,)

    @admin.action(description="Resolve selected groups now", permissions=["admin_role"])
    def resolve_now(self, request, queryset):
        for group in queryset:
            sync_group_task.delay(group.pk)
        messages.info(request, f"Resolution queued for {queryset.count()} group(s).")

    def create(self, request, obj, form):
        fields = {name: form.cleaned_data[name] for name in GROUP_FIELDS if name in form.cleaned_data}
        return create_group(self.actor(request), **fields)

    def update(self, request, obj, form):
        update_group(ServerGroup.objects.get(pk=obj.pk), self.actor(request), **_changes(form, GROUP_FIELDS))

    def delete(self, request, obj):
        delete_group(obj, self.actor(request))


class DeploymentTransitionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = DeploymentTransition
    extra = 0
    fields = ["created_at", "from_state", "to_state", "error"]
    readonly_fields = fields


@admin.register(Deployment)
class DeploymentAdmin(ServiceAdmin):
    write_scope = Scope.DEPLOY  # as the API's deploy and undeploy
    list_display = ["version", "server", "desired", "observed", "observed_at", "last_error"]
    list_filter = ["desired", "observed", "server"]
    list_select_related = ["version__model", "server"]
    search_fields = ["version__model__name", "server__name"]
    inlines = [DeploymentTransitionInline]
    refusals = (InUse,)
    # Observed state is the reconciler's to write (modelhub.serving.transitions).
    observed_fields = ["observed", "last_error", "observed_at", "checked_at", "retry_at", "created_at", "desired_at"]

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # a new deployment has no history

    def get_readonly_fields(self, request, obj=None):
        # A deployment is one version on one server: changing either would be another deployment.
        return ["version", "server", *self.observed_fields] if obj is not None else self.observed_fields

    def _request(self, request, obj) -> Deployment:
        change = request_deploy if obj.desired == DesiredState.LOADED else request_undeploy
        try:
            return change(obj.version, [obj.server], self.actor(request))[0]
        except TaskQueueUnavailable as exc:  # recorded all the same; the periodic reconcile does it
            messages.warning(request, str(exc))
            return Deployment.objects.get(version=obj.version, server=obj.server)

    def create(self, request, obj, form):
        return self._request(request, obj)

    def update(self, request, obj, form):
        if "desired" in form.changed_data:
            self._request(request, obj)

    def delete(self, request, obj):
        delete_deployment(obj, self.actor(request))


@admin.register(DeploymentTransition)
class DeploymentTransitionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Transitions are history: written by the reconciler only.
    list_display = ["created_at", "deployment", "from_state", "to_state", "error"]
    list_filter = ["to_state"]
    list_select_related = ["deployment__version__model", "deployment__server"]
