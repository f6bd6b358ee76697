from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpResponseRedirect

from modelhub.access.roles import RoleAdminMixin
from modelhub.audit.actors import Actor, client_ip
from modelhub.audit.log import record
from modelhub.audit.models import AuditEvent, Source


@admin.register(AuditEvent)
class AuditEventAdmin(RoleAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "actor", "source", "action", "object_type", "object_repr", "model_name"]
    list_filter = ["source", "action", "object_type"]
    search_fields = ["actor", "object_repr", "action", "model_name"]
    date_hierarchy = "created_at"

    # The audit log is append-only, in the admin too.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditedAdmin(RoleAdminMixin, admin.ModelAdmin):
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


class ServiceAdmin(RoleAdminMixin, admin.ModelAdmin):
    """A ModelAdmin whose writes go through the same service functions as the API,
    which check the rules and write the audit rows: subclasses say which, in
    `create`, `update` and `delete`.

    A delete the service refuses (one of `refusals`) shows the service's own reason
    on the confirmation page: the page asks the service in a rolled-back dry run,
    so the admin never keeps a second copy of the rules.
    """

    refusals: tuple[type[Exception], ...] = ()

    def actor(self, request) -> Actor:
        return Actor(source=Source.ADMIN, user=request.user, remote_addr=client_ip(request))

    def create(self, request, obj, form):
        """Create the object the add form describes (unsaved `obj`); return the saved one."""
        raise NotImplementedError

    def update(self, request, obj, form) -> None:
        """Apply the change form: form.changed_data names the fields, `obj` carries their values."""
        raise NotImplementedError

    def delete(self, request, obj) -> None:
        raise NotImplementedError

    def save_model(self, request, obj, form, change):
        if change:
            self.update(request, obj, form)
        else:
            obj.pk = self.create(request, obj, form).pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        self.delete(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete(request, obj)

    def get_deleted_objects(self, objs, request):
        deleted, model_count, _perms_needed, _protected = super().get_deleted_objects(objs, request)
        # What stops a delete is the service's rule, not the foreign keys' PROTECT (the service
        # removes some protected rows itself, e.g. undeployed deployments), nor the delete
        # permission on rows that go along with it (a version's schema, a deployment's
        # transitions): those are written by services only, so nobody may delete them by hand.
        reasons = [reason for obj in objs if (reason := self._refusal(request, obj))]
        for reason in reasons:
            self.message_user(request, reason, messages.ERROR)
        return deleted, model_count, set(), reasons

    def _refusal(self, request, obj) -> str | None:
        # On a copy: a delete clears the primary key of the instance it deleted.
        obj = type(obj)._default_manager.get(pk=obj.pk)
        try:
            with transaction.atomic():
                self.delete(request, obj)
                raise _DryRun
        except _DryRun:
            return None
        except self.refusals as exc:
            return str(exc)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except self.refusals as exc:  # refused after the confirmation page: something changed meanwhile
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.path)

    def response_action(self, request, queryset):
        # Bulk actions (delete_selected among them) are all or nothing.
        try:
            with transaction.atomic():
                return super().response_action(request, queryset)
        except self.refusals as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


class _DryRun(Exception):
    pass
