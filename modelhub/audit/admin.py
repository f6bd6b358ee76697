from django.contrib import admin

from modelhub.audit.actors import Actor, client_ip
from modelhub.audit.log import record
from modelhub.audit.models import AuditEvent, Source


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor", "source", "action", "object_type", "object_repr"]
    list_filter = ["source", "action", "object_type"]
    search_fields = ["actor", "object_repr", "action"]
    date_hierarchy = "created_at"

    # The audit log is append-only, in the admin too.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditedAdmin(admin.ModelAdmin):
    """A ModelAdmin whose saves and deletes write audit rows (source=admin)."""

    def _actor(self, request) -> Actor:
        return Actor(source=Source.ADMIN, user=request.user, remote_addr=client_ip(request))

    def _action(self, obj, verb: str) -> str:
        return f"{obj._meta.model_name}.{verb}"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        changed = list(form.changed_data) if form is not None else []
        record(self._actor(request), self._action(obj, "update" if change else "create"), obj, fields=changed)

    def delete_model(self, request, obj):
        record(self._actor(request), self._action(obj, "delete"), obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            record(self._actor(request), self._action(obj, "delete"), obj)
        super().delete_queryset(request, queryset)
