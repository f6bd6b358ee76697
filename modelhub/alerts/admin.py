"""Admin of alert rules (written through the services, audited), and of alert state,
flips and notification attempts (read-only: written by evaluation and delivery only)."""

from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from modelhub.access.roles import Scope
from modelhub.alerts.models import Alert, AlertRule, Flip, Notification
from modelhub.alerts.services import RULE_FIELDS, acknowledge, create_rule, delete_rule, unsilence, update_rule
from modelhub.audit.actors import Actor, client_ip
from modelhub.audit.admin import ServiceAdmin
from modelhub.audit.models import Source
from modelhub.registry.admin import ReadOnlyAdminMixin


@admin.register(AlertRule)
class AlertRuleAdmin(ServiceAdmin):
    write_scope = Scope.DEPLOY  # as the API's rule writes
    list_display = ["name", "signal", "series", "scope", "model", "server", "threshold", "severity", "enabled"]
    list_filter = ["signal", "scope", "severity", "enabled"]
    search_fields = ["name", "series", "model__name", "server__name"]
    list_select_related = ["model", "server"]
    filter_horizontal = ["groups"]
    readonly_fields = ["created_at", "updated_at"]

    def _fields(self, form, names) -> dict:
        return {name: form.cleaned_data[name] for name in names if name in form.cleaned_data}

    def create(self, request, obj, form):
        return create_rule(self.actor(request), **self._fields(form, RULE_FIELDS))

    def update(self, request, obj, form):
        update_rule(obj, self.actor(request), **self._fields(form, set(form.changed_data) & set(RULE_FIELDS)))

    def save_related(self, request, form, formsets, change):
        pass  # the groups were set by the service, with the rule's audit row

    def delete(self, request, obj):
        delete_rule(obj, self.actor(request))


class NotificationInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Notification
    extra = 0
    fields = ["recipient", "attempt", "status", "error", "created_at", "sent_at", "retry_at"]
    readonly_fields = fields


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["target_label", "rule", "state", "since", "last_value", "acknowledged_at", "silenced_until"]
    list_filter = ["state", "rule__signal", "rule__severity"]
    search_fields = ["target_label", "rule__name", "last_message"]
    list_select_related = ["rule"]
    date_hierarchy = "since"
    actions = ["acknowledge_selected", "unsilence_selected"]

    @admin.action(description="Acknowledge the selected firing alerts", permissions=["deploy_role"])
    def acknowledge_selected(self, request, queryset):
        actor = Actor(source=Source.ADMIN, user=request.user, remote_addr=client_ip(request))
        for alert in queryset:
            try:
                acknowledge(alert, actor)
            except ValidationError as exc:
                self.message_user(request, "; ".join(exc.messages), messages.WARNING)

    @admin.action(description="End the silence of the selected alerts", permissions=["deploy_role"])
    def unsilence_selected(self, request, queryset):
        actor = Actor(source=Source.ADMIN, user=request.user, remote_addr=client_ip(request))
        for alert in queryset:
            unsilence(alert, actor)


@admin.register(Flip)
class FlipAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["alert", "from_state", "to_state", "reminder", "value", "created_at", "processed"]
    list_filter = ["to_state", "reminder"]
    list_select_related = ["alert__rule"]
    date_hierarchy = "created_at"
    inlines = [NotificationInline]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["flip", "recipient", "attempt", "status", "created_at", "sent_at", "retry_at"]
    list_filter = ["status"]
    search_fields = ["recipient", "error"]
    list_select_related = ["flip__alert__rule"]
    date_hierarchy = "created_at"
