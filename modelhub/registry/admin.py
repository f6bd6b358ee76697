"""Admin of the registry's rows that need no knowledge of serving.

Models and versions are in serving's admin: deleting them must know where
they run, and the registry sits below serving.
"""

from django import forms
from django.contrib import admin

from modelhub.audit.admin import ServiceAdmin
from modelhub.registry.models import Alias, AliasMove, TensorSpec
from modelhub.registry.services import move_alias


class ReadOnlyAdminMixin:
    """History and schema rows: written by the service functions only, never by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class TensorSpecInline(ReadOnlyAdminMixin, admin.TabularInline):
    # A version's schema is what deploys check Triton against: fixed once registered.
    model = TensorSpec
    extra = 0
    fields = ["direction", "position", "name", "datatype", "dims", "labels"]
    readonly_fields = fields


class AliasForm(forms.ModelForm):
    class Meta:
        model = Alias
        fields = ["model", "name", "version"]

    def clean(self):
        cleaned = super().clean()
        model = cleaned.get("model") or getattr(self.instance, "model", None)
        version = cleaned.get("version")
        if model is not None and version is not None and version.model_id != model.pk:
            self.add_error("version", f"{version} is not a version of {model.name}")
        return cleaned


@admin.register(Alias)
class AliasAdmin(ServiceAdmin):
    """Every move goes through move_alias, which keeps it as an AliasMove row."""

    form = AliasForm
    list_display = ["model", "name", "version", "updated_at"]
    list_select_related = ["model", "version"]
    search_fields = ["model__name", "name"]

    def get_readonly_fields(self, request, obj=None):
        # Renaming an alias, or moving it to another model, is dropping one and adding another.
        return ["model", "name", "updated_at"] if obj is not None else ["updated_at"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "version":
            field.queryset = field.queryset.select_related("model")
            object_id = request.resolver_match.kwargs.get("object_id")
            alias = self.get_object(request, object_id) if object_id else None
            if alias is not None:  # the change form offers that model's versions only
                field.queryset = field.queryset.filter(model=alias.model)
        return field

    def create(self, request, obj, form):
        return move_alias(obj.model, obj.name, obj.version, self.actor(request))

    def update(self, request, obj, form):
        move_alias(obj.model, obj.name, obj.version, self.actor(request))

    def delete(self, request, obj):
        move_alias(obj.model, obj.name, None, self.actor(request))


@admin.register(AliasMove)
class AliasMoveAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "model", "alias", "from_version", "to_version", "moved_by"]
    list_select_related = ["model", "from_version__model", "to_version__model"]


@admin.register(TensorSpec)
class TensorSpecAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["version", "direction", "name", "datatype", "dims"]
    list_filter = ["direction", "datatype"]
    list_select_related = ["version__model"]
    search_fields = ["name", "version__model__name"]
