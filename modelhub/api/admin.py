from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from modelhub.api.models import ApiToken, Scope
from modelhub.api.tokens import revoke_token
from modelhub.audit.admin import AuditedAdmin

DEFAULT_LIFETIME_DAYS = 90


class ApiTokenForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiToken
        fields = ["name", "user", "scopes", "allowed_models", "expires_at", "revoked"]


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdmin):
    form = ApiTokenForm
    list_display = ["name", "prefix", "user", "scopes", "restricted", "expires_at", "last_used_at", "revoked"]
    list_filter = ["revoked"]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]
    filter_horizontal = ["allowed_models"]
    readonly_fields = ["prefix", "restricted", "created_at", "last_used_at"]
    actions = ["revoke"]

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("expires_at", timezone.now() + timezone.timedelta(days=DEFAULT_LIFETIME_DAYS))
        initial.setdefault("scopes", [Scope.READ])
        return initial

    def save_model(self, request, obj, form, change):
        text = None if change else obj.set_new_secret()
        obj.restricted = bool(form.cleaned_data.get("allowed_models"))
        super().save_model(request, obj, form, change)
        if text:
            # Shown once: only its hash is stored.
            messages.warning(request, f"API token {obj.name!r}: {text} (copy it now, it is not shown again)")

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        for token in queryset:
            revoke_token(token, self._actor(request))
        messages.info(request, f"Revoked {queryset.count()} token(s).")
