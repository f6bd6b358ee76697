from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from modelhub.registry.schema import DIRECTIONS, INPUT, OUTPUT, TRITON_DATATYPES, SchemaError, normalise_tensor

# Triton model names end up in URLs and folder names: keep them to a safe slug.
model_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]{0,99}$",
    "use 1-100 lowercase letters, digits, '-' or '_', starting with a letter or digit",
)
alias_name_validator = RegexValidator(
    r"^[a-z][a-z0-9_-]{0,49}$", "use 1-50 lowercase letters, digits, '-' or '_', starting with a letter"
)


class TaskKind(models.TextChoices):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    OTHER = "other"


class Model(models.Model):
    name = models.CharField(max_length=100, unique=True, validators=[model_name_validator])
    description = models.TextField(blank=True)
    task_kind = models.CharField(max_length=20, choices=TaskKind.choices, default=TaskKind.OTHER)
    owners = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="owned_models")
    latency_slo_ms = models.FloatField(
        null=True,
        blank=True,
        help_text="The p95 latency (ms, client side) this model must stay under: the latency alert and the "
        "promotion gate compare with it; empty = no latency objective",
    )
    # The highest version number ever given out. Numbers are never reused: "v3" in a CI
    # log, an audit row or an alert must keep meaning the same bytes after v3 is deleted.
    last_version_number = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ArtifactFormat(models.TextChoices):
    ZIP = "zip"
    TAR = "tar"
    TAR_GZ = "tar.gz"
    ONNX = "onnx", "bare ONNX file"


def artifact_path(version: "ModelVersion", filename: str) -> str:
    # Content-addressed: the same bytes always land on the same name.
    return f"{version.model.name}/{version.sha256}.{version.artifact_format}"


class ModelVersion(models.Model):
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    artifact = models.FileField(upload_to=artifact_path, max_length=300)
    artifact_format = models.CharField(max_length=10, choices=ArtifactFormat.choices)
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    # What is inside the artifact: path -> size, per Triton folder level.
    version_files = models.JSONField(default=dict)
    model_files = models.JSONField(default=dict, blank=True)
    backend = models.CharField(max_length=64, blank=True)
    platform = models.CharField(max_length=64, blank=True)
    max_batch_size = models.PositiveIntegerField(default=0)
    triton_config = models.JSONField(
        default=dict, blank=True, help_text="Extra Triton model config: instance_group, dynamic_batching, …"
    )
    git_commit = models.CharField(max_length=64, blank=True)
    ci_run_url = models.URLField(max_length=500, blank=True)
    metadata = models.JSONField(default=dict, blank=True, help_text="Free-form, e.g. offline metrics")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model__name", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["model", "number"], name="version_number_unique_per_model"),
            # The same bytes for the same model are the same version (idempotent upload).
            models.UniqueConstraint(fields=["model", "sha256"], name="version_sha256_unique_per_model"),
            models.CheckConstraint(
                condition=(Q(backend="") & ~Q(platform="")) | (~Q(backend="") & Q(platform="")),
                name="version_has_backend_xor_platform",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.number}"

    @property
    def inputs(self) -> list["TensorSpec"]:
        return [t for t in self.tensors.all() if t.direction == INPUT]

    @property
    def outputs(self) -> list["TensorSpec"]:
        return [t for t in self.tensors.all() if t.direction == OUTPUT]


class TensorSpec(models.Model):
    class Direction(models.TextChoices):
        INPUT = INPUT
        OUTPUT = OUTPUT

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="tensors")
    direction = models.CharField(max_length=6, choices=Direction.choices)
    position = models.PositiveSmallIntegerField(default=0)
    name = models.CharField(max_length=128)
    datatype = models.CharField(max_length=6, choices=[(d, d) for d in TRITON_DATATYPES])
    dims = models.JSONField(help_text="-1 for a variable size")
    labels = models.JSONField(null=True, blank=True, help_text="class labels of a classification output")

    class Meta:
        ordering = ["version", "direction", "position"]
        constraints = [
            models.UniqueConstraint(fields=["version", "direction", "name"], name="tensor_name_unique_per_direction"),
        ]

    def __str__(self) -> str:
        return f"{self.direction} {self.name} {self.datatype}{self.dims}"

    def save(self, *args, **kwargs):
        # Validate on every save, not only in forms: the schema is what deploys check against.
        self.full_clean(exclude=["version"])
        super().save(*args, **kwargs)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        raw = {"name": self.name, "datatype": self.datatype, "dims": self.dims}
        if self.labels is not None:
            raw["labels"] = self.labels
        normalise_tensor(raw, "tensor", errors)
        if errors:
            raise ValidationError({key.removeprefix("tensor.") or "name": msg for key, msg in errors.items()})
        siblings = TensorSpec.objects.filter(version_id=self.version_id, direction=self.direction, name=self.name)
        if self.version_id and siblings.exclude(pk=self.pk).exists():
            raise ValidationError({"name": f"duplicate {DIRECTIONS[self.direction][:-1]} name {self.name!r}"})

    def as_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "dims": list(self.dims), "labels": self.labels}


class Alias(models.Model):
    """A movable name (production, staging, …) pointing at one version of a model."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=50, validators=[alias_name_validator])
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    # A weighted canary: `canary_weight` percent of the alias's traffic goes to `canary_version`,
    # the rest to `version`. Changed only by registry.services (start/set/promote/abort_canary).
    canary_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="canary_aliases"
    )
    canary_weight = models.PositiveSmallIntegerField(default=0, help_text="percent of the traffic the canary gets")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["model", "name"], name="alias_unique_per_model"),
            # No canary and no weight, or a canary on another version with a weight both versions share.
            models.CheckConstraint(
                condition=(Q(canary_version__isnull=True) & Q(canary_weight=0))
                | (
                    Q(canary_version__isnull=False)
                    & Q(canary_weight__gte=1)
                    & Q(canary_weight__lte=99)
                    & ~Q(canary_version=models.F("version"))
                ),
                name="alias_canary_consistent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.name}"


class AliasMove(models.Model):
    """Every move of an alias, kept forever: rolling back is moving it back."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="alias_moves")
    alias = models.CharField(max_length=50)
    from_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    to_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    moved_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.alias}: {self.from_version_id} -> {self.to_version_id}"


class EvaluationMetric(models.TextChoices):
    ACCURACY = "accuracy"
    TOP_K_ACCURACY = "top_k_accuracy", "top-k accuracy"
    MACRO_F1 = "macro_f1", "macro F1"
    MAE = "mae", "mean absolute error"
    RMSE = "rmse", "root mean squared error"


# Metrics where lower is better: the threshold is a ceiling, not a floor.
LOWER_IS_BETTER = frozenset({EvaluationMetric.MAE, EvaluationMetric.RMSE})


class EvaluationSetFormat(models.TextChoices):
    NPZ = "npz", "NumPy .npz"
    JSONL = "jsonl", "JSON lines"


def evaluation_set_path(evaluation_set: "EvaluationSet", filename: str) -> str:
    return f"{evaluation_set.model.name}/evaluation/{evaluation_set.sha256}.{evaluation_set.file_format}"


class EvaluationSet(models.Model):
    """Inputs and expected outputs the accuracy check sends through Triton, one per
    model (a new upload replaces it). Validated against the schema on upload and
    stored like artifacts."""

    model = models.OneToOneField(Model, on_delete=models.CASCADE, related_name="evaluation_set")
    file = models.FileField(upload_to=evaluation_set_path, max_length=300)
    file_format = models.CharField(max_length=5, choices=EvaluationSetFormat.choices)
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    rows = models.PositiveIntegerField()
    # Which output the expectations are for, and how a version's answers are scored.
    output = models.CharField(max_length=128)
    metric = models.CharField(max_length=20, choices=EvaluationMetric.choices, default=EvaluationMetric.ACCURACY)
    k = models.PositiveSmallIntegerField(default=1, help_text="k of top-k accuracy")
    threshold = models.FloatField(
        null=True, blank=True, help_text="Below this (above, for MAE/RMSE) the accuracy check fails and alerts"
    )
    tolerance = models.FloatField(
        default=0.0, help_text="A gated promotion accepts a candidate scoring at most this much worse than production"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model__name"]

    def __str__(self) -> str:
        return f"evaluation set of {self.model.name} ({self.rows} rows, {self.metric})"

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER


__all__ = [
    "Alias",
    "AliasMove",
    "EvaluationMetric",
    "EvaluationSet",
    "Model",
    "ModelVersion",
    "TensorSpec",
    "TaskKind",
    "SchemaError",
]
