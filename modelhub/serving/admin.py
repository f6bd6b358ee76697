from django.contrib import admin, messages

from modelhub.audit.actors import Actor, client_ip
from modelhub.audit.admin import AuditedAdmin
from modelhub.audit.models import Source
from modelhub.serving.models import Deployment, DeploymentTransition, InferenceServer
from modelhub.serving.tasks import reconcile_server_task


@admin.register(InferenceServer)
class InferenceServerAdmin(AuditedAdmin):
    list_display = ["name", "base_url", "enabled", "live", "ready", "triton_version", "last_seen_at"]
    list_filter = ["enabled", "live", "ready"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["live", "ready", "last_seen_at", "last_checked_at", "last_error", "triton_version", "extensions"]
    actions = ["reconcile_now"]

    @admin.action(description="Reconcile selected servers now")
    def reconcile_now(self, request, queryset):
        for server in queryset:
            reconcile_server_task.delay(server.pk)
        messages.info(request, f"Reconciliation queued for {queryset.count()} server(s).")


class DeploymentTransitionInline(admin.TabularInline):
    model = DeploymentTransition
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "from_state", "to_state", "error"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Deployment)
class DeploymentAdmin(AuditedAdmin):
    list_display = ["version", "server", "desired", "observed", "observed_at", "last_error"]
    list_filter = ["desired", "observed", "server"]
    list_select_related = ["version__model", "server"]
    search_fields = ["version__model__name", "server__name"]
    # Observed state is the reconciler's to write (modelhub.serving.transitions).
    readonly_fields = ["observed", "last_error", "observed_at", "checked_at", "retry_at", "created_at", "desired_at"]
    inlines = [DeploymentTransitionInline]

    def save_model(self, request, obj, form, change):
        from modelhub.serving.services import request_deploy, request_undeploy

        actor = Actor(source=Source.ADMIN, user=request.user, remote_addr=client_ip(request))
        request_change = request_deploy if obj.desired == "loaded" else request_undeploy
        obj.pk = request_change(obj.version, [obj.server], actor)[0].pk
        obj.refresh_from_db()


@admin.register(DeploymentTransition)
class DeploymentTransitionAdmin(admin.ModelAdmin):
    list_display = ["created_at", "deployment", "from_state", "to_state", "error"]
    list_filter = ["to_state"]
    list_select_related = ["deployment__version__model", "deployment__server"]

    # Transitions are history: written by the reconciler only.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
