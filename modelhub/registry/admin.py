"""Admin of the registry's rows that need no knowledge of serving.

Models and versions are in serving's admin: deleting them must know where
they run, and the registry sits below serving.
"""

import shutil
import tempfile
from contextlib import contextmanager

from django import forms
from django.conf import settings
from django.contrib import admin

from modelhub.access.roles import RoleAdminMixin, Scope
from modelhub.audit.admin import ServiceAdmin
from modelhub.registry.evaluation import (
    EvaluationSetError,
    attach_evaluation_set,
    inspect_evaluation_file,
    remove_evaluation_set,
)
from modelhub.registry.models import Alias, AliasMove, EvaluationSet, TensorSpec
from modelhub.registry.services import move_alias


class ReadOnlyAdminMixin(RoleAdminMixin):
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
    write_scope = Scope.DEPLOY  # as the API's alias moves
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


# --- evaluation sets ------------------------------------------------------------

EVALUATION_FIELDS = ("output", "metric", "k", "threshold", "tolerance")


@contextmanager
def _file_path(uploaded=None, stored=None):
    """A path on disk holding an uploaded file (kept as the upload's temporary file when
    it has one) or, for a change without a new upload, the set's stored file."""
    if uploaded is not None and hasattr(uploaded, "temporary_file_path"):
        yield uploaded.temporary_file_path()
        return
    with tempfile.NamedTemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR, suffix=".evaluation") as copy:
        source = uploaded if uploaded is not None else stored.open("rb")
        try:
            source.seek(0)
            shutil.copyfileobj(source, copy, 1024 * 1024)
        finally:
            if stored is not None:
                stored.close()
        copy.flush()
        yield copy.name


class EvaluationSetForm(forms.ModelForm):
    upload = forms.FileField(
        required=False,
        label="File",
        help_text="A .npz (one array per input, named after it, and one named after the output) or JSON lines "
        '({"inputs": {name: value}, "expected": value} per line). Checked against the latest version\'s schema. '
        "On a change, leave it empty to keep the current file.",
    )

    class Meta:
        model = EvaluationSet
        fields = ["model", *EVALUATION_FIELDS]

    def clean(self):
        cleaned = super().clean()
        model = cleaned.get("model") or getattr(self.instance, "model", None)
        uploaded = cleaned.get("upload")
        if self.instance.pk is None and uploaded is None:
            self.add_error("upload", "an evaluation set needs its file")
        if model is None or self.errors:
            return cleaned
        settings_ = {name: cleaned.get(name) for name in EVALUATION_FIELDS}
        try:
            with _file_path(uploaded, None if uploaded else self.instance.file) as path:
                inspect_evaluation_file(model, path, **settings_)
        except EvaluationSetError as exc:
            for field, message in exc.errors.items():
                self.add_error("upload" if field == "file" else field if field in self.fields else None, message)
        return cleaned


@admin.register(EvaluationSet)
class EvaluationSetAdmin(ServiceAdmin):
    write_scope = Scope.UPLOAD  # as the API's evaluation-set upload
    """Uploads, changes and removals go through the same service as the API (validated, audited)."""

    form = EvaluationSetForm
    list_display = ["model", "rows", "metric", "output", "threshold", "tolerance", "created_at", "created_by"]
    list_select_related = ["model", "created_by"]
    search_fields = ["model__name"]
    readonly_fields = ["file", "file_format", "sha256", "size", "rows", "created_by", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        # One set per model: a set moves to another model by removing it and uploading there.
        return [*self.readonly_fields, "model"] if obj is not None else self.readonly_fields

    def _attach(self, request, obj, form) -> EvaluationSet:
        uploaded = form.cleaned_data.get("upload")
        current = EvaluationSet.objects.filter(pk=obj.pk).first() if obj.pk else None
        with _file_path(uploaded, None if uploaded else current.file) as path:
            return attach_evaluation_set(
                obj.model,
                path,
                self.actor(request),
                **{name: form.cleaned_data[name] for name in EVALUATION_FIELDS},
            )

    def create(self, request, obj, form):
        return self._attach(request, obj, form)

    def update(self, request, obj, form):
        self._attach(request, obj, form)

    def delete(self, request, obj):
        remove_evaluation_set(obj.model, self.actor(request))
