from django.contrib import admin

from modelhub.audit.admin import AuditedAdmin
from modelhub.registry.models import Alias, AliasMove, Model, ModelVersion, TensorSpec


class TensorSpecInline(admin.TabularInline):
    model = TensorSpec
    extra = 0
    fields = ["direction", "position", "name", "datatype", "dims", "labels"]


@admin.register(Model)
class ModelAdmin(AuditedAdmin):
    list_display = ["name", "task_kind", "created_at"]
    list_filter = ["task_kind"]
    search_fields = ["name", "description"]
    filter_horizontal = ["owners"]


@admin.register(ModelVersion)
class ModelVersionAdmin(AuditedAdmin):
    list_display = ["model", "number", "backend", "platform", "max_batch_size", "size", "created_at", "created_by"]
    list_filter = ["backend", "platform"]
    search_fields = ["model__name", "sha256", "git_commit"]
    list_select_related = ["model", "created_by"]
    inlines = [TensorSpecInline]
    # Bytes and their digest are what was uploaded: never edited by hand.
    readonly_fields = [
        "model",
        "number",
        "artifact",
        "artifact_format",
        "sha256",
        "size",
        "version_files",
        "model_files",
        "created_by",
        "created_at",
    ]


@admin.register(Alias)
class AliasAdmin(AuditedAdmin):
    list_display = ["model", "name", "version", "updated_at"]
    list_select_related = ["model", "version"]


@admin.register(AliasMove)
class AliasMoveAdmin(admin.ModelAdmin):
    list_display = ["created_at", "model", "alias", "from_version", "to_version", "moved_by"]
    list_select_related = ["model", "from_version", "to_version"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(TensorSpec)
class TensorSpecAdmin(admin.ModelAdmin):
    list_display = ["version", "direction", "name", "datatype", "dims"]
    list_filter = ["direction", "datatype"]
    list_select_related = ["version__model"]
    search_fields = ["name", "version__model__name"]
