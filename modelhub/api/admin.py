from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from modelhub.access.roles import Scope
from modelhub.api.models import ApiToken
from modelhub.api.tokens import revoke_token
from modelhub.audit.admin import AuditedAdmin

DEFAULT_LIFETIME_DAYS = 90
FORM_FIELDS = ["name", "user", "scopes", "allowed_models", "expires_at", "revoked"]


class ApiTokenForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiToken
        fields = FORM_FIELDS


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

    # Tokens act for people: only an admin (by role) sees or manages them, or a staff
    # member with the Django permission could mint a token acting for a superuser.
    view_scope = write_scope = Scope.ADMIN

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        # A new token is not revoked; an existing one is revoked through revoke_token (save_model).
        return [f for f in fields if f != "revoked"] if obj is None else fields

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.revoked:
            # Revoked for good: not un-revoked, not repurposed under another name or user.
            return [*FORM_FIELDS, *self.readonly_fields]
        return self.readonly_fields

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        initial.setdefault("expires_at", timezone.now() + timezone.timedelta(days=DEFAULT_LIFETIME_DAYS))
        initial.setdefault("scopes", [Scope.READ])
        return initial

    def save_model(self, request, obj, form, change):
        revoking = change and "revoked" in form.changed_data and obj.revoked
        if revoking:
            obj.revoked = False  # written (and audited) by revoke_token below, not by the form
            form.changed_data.remove("revoked")
        if not change:
            obj._shown_once = obj.set_new_secret()  # only its hash is stored
        if "allowed_models" in form.cleaned_data:  # not when read-only (a revoked token)
            obj.restricted = bool(form.cleaned_data["allowed_models"])
        if not change or form.changed_data:
            super().save_model(request, obj, form, change)
        if revoking:
            revoke_token(obj, self._actor(request))

    def response_add(self, request, obj, post_url_continue=None):
        text = getattr(obj, "_shown_once", None)
        if text is None:
            return super().response_add(request, obj, post_url_continue)
        # The secret is rendered into this one page, never into a message (a cookie) or a log.
        response = TemplateResponse(
            request,
            "admin/api/apitoken/token_created.html",
            {
                **self.admin_site.each_context(request),
                "title": f"API token {obj.name!r} created",
                "opts": self.opts,
                "token": obj,
                "token_text": text,
                "models": sorted(obj.allowed_models.values_list("name", flat=True)),
                "change_url": reverse("admin:api_apitoken_change", args=[obj.pk]),
                "changelist_url": reverse("admin:api_apitoken_changelist"),
            },
        )
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke selected tokens", permissions=["admin_role"])
    def revoke(self, request, queryset):
        for token in queryset:
            revoke_token(token, self._actor(request))
        messages.info(request, f"Revoked {queryset.count()} token(s).")
