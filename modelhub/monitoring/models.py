"""What the checks found: one row per result, and the time series behind the charts.

Rows with rules are written in one place each: check results and points by
modelhub.monitoring.record.record(); statistics baselines by the statistics check.
"""

from django.db import models
from django.utils import timezone

from modelhub.registry.models import ModelVersion
from modelhub.serving.models import Deployment, InferenceServer


class CheckKind(models.TextChoices):
    SERVER_HEALTH = "server_health", "server health"
    MODEL_READY = "model_ready", "model readiness"
    SCHEMA = "schema", "schema conformance"
    LATENCY = "latency", "latency probe"
    STATS = "stats", "Triton statistics"
    METRICS = "metrics", "server metrics"
    ACCURACY = "accuracy", "accuracy"
    MEMORY = "memory", "memory around loads"
    DRIFT = "drift", "input and output drift"


class Status(models.TextChoices):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


class CheckResult(models.Model):
    """One check of one target at one time.

    The target is a server (server health, metrics), a deployment (readiness,
    schema, latency, statistics; `version` and `server` are filled too, so a
    result outlives its deployment's row), or a version (accuracy, memory).
    """

    kind = models.CharField(max_length=20, choices=CheckKind.choices)
    status = models.CharField(max_length=4, choices=Status.choices)
    server = models.ForeignKey(
        InferenceServer, null=True, blank=True, on_delete=models.CASCADE, related_name="check_results"
    )
    deployment = models.ForeignKey(
        Deployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="check_results"
    )
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="check_results"
    )
    value = models.FloatField(null=True, blank=True, help_text="The check's headline figure (p95 ms, accuracy, …)")
    message = models.TextField(blank=True, help_text="What was wrong: Triton's reason, the tensor that differs")
    details = models.JSONField(default=dict, blank=True)
    # A pass's results carry "<pass id>:<kind>:<target>": a task retried, or run by
    # two workers, writes each result once (the unique constraint drops the second).
    dedupe_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["kind", "server", "-created_at"], name="result_kind_server_time"),
            models.Index(fields=["kind", "deployment", "-created_at"], name="result_kind_deploy_time"),
            models.Index(fields=["kind", "version", "-created_at"], name="result_kind_version_time"),
            models.Index(fields=["created_at"], name="result_created_at"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.status} {self.target_label}"

    @property
    def target_label(self) -> str:
        if self.version_id and self.server_id:
            return f"{self.version} on {self.server}"
        return str(self.version or self.server or "-")


def series_target(obj) -> str:
    """The key a series is filed under: "server:3", "deployment:12", "version:5"."""
    kind = {InferenceServer: "server", Deployment: "deployment", ModelVersion: "version"}[type(obj)]
    return f"{kind}:{obj.pk}"


class Point(models.Model):
    """One raw value of one series (metric x target) at one time. Expires after
    MONITORING_RAW_RETENTION_HOURS; charts over longer ranges read PointRollup."""

    metric = models.CharField(max_length=64, help_text="e.g. latency_p95_ms, queue_ms, cpu_util, gpu_memory_used")
    target = models.CharField(max_length=64, help_text='e.g. "server:3", "deployment:12", "version:5"')
    time = models.DateTimeField()
    value = models.FloatField()

    class Meta:
        ordering = ["metric", "target", "time"]
        indexes = [
            models.Index(fields=["metric", "target", "time"], name="point_series_time"),
            models.Index(fields=["time"], name="point_time"),
        ]

    def __str__(self) -> str:
        return f"{self.metric}[{self.target}] {self.time:%Y-%m-%d %H:%M:%S} = {self.value}"


class Resolution(models.TextChoices):
    MINUTE = "minute"
    HOUR = "hour"


class PointRollup(models.Model):
    """Points of one series summed up per minute or per hour (count, sum, min, max;
    the mean is sum / count). Kept longer than raw points."""

    resolution = models.CharField(max_length=6, choices=Resolution.choices)
    metric = models.CharField(max_length=64)
    target = models.CharField(max_length=64)
    bucket = models.DateTimeField(help_text="Start of the minute or hour")
    count = models.PositiveIntegerField()
    sum = models.FloatField()
    min = models.FloatField()
    max = models.FloatField()

    class Meta:
        ordering = ["resolution", "metric", "target", "bucket"]
        constraints = [
            models.UniqueConstraint(
                fields=["resolution", "metric", "target", "bucket"], name="one_rollup_per_series_bucket"
            )
        ]
        indexes = [models.Index(fields=["resolution", "bucket"], name="rollup_resolution_bucket")]

    def __str__(self) -> str:
        return f"{self.resolution} {self.metric}[{self.target}] {self.bucket:%Y-%m-%d %H:%M}"


class StatsBaseline(models.Model):
    """Triton's cumulative statistics counters for one model version on one server,
    as last read: the next read minus this is one interval's point."""

    server = models.ForeignKey(InferenceServer, on_delete=models.CASCADE, related_name="+")
    triton_model = models.CharField(max_length=200)
    triton_version = models.CharField(max_length=20)
    counters = models.JSONField(default=dict)
    read_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["server", "triton_model", "triton_version"], name="one_stats_baseline_per_served_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.triton_model} v{self.triton_version} on {self.server}"


class SampleBlock(models.Model):
    """Sampled requests (or uploaded prediction logs) of one version, written together.

    Columnar: one row per written batch, each column a little-endian numpy array of
    one value per sample (see modelhub.monitoring.sampling.Layout for the feature and
    output columns a version has). The drift task reads a window's blocks in chunks
    into arrays: no Python object per sample, and a million samples are ~100 rows.
    """

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="sample_blocks")
    first_time = models.DateTimeField()
    last_time = models.DateTimeField()
    count = models.PositiveIntegerField()
    times = models.BinaryField(help_text="float64 Unix seconds, one per sample")
    request_ids = models.JSONField(default=list, help_text="one per sample")
    features = models.BinaryField(help_text="float32 [count, features], the layout's feature columns")
    outputs = models.BinaryField(help_text="float64 [count, outputs], the layout's output columns")
    source = models.CharField(max_length=10, default="gateway", help_text="gateway or api (uploaded logs)")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["version", "last_time"], name="sample_block_version_time"),
            models.Index(fields=["created_at"], name="sample_block_created"),
        ]

    def __str__(self) -> str:
        return f"{self.count} samples of {self.version_id} from {self.first_time:%Y-%m-%d %H:%M:%S}"


class PredictionLabel(models.Model):
    """Ground truth posted late for a logged request id of a model (live accuracy)."""

    model = models.ForeignKey("registry.Model", on_delete=models.CASCADE, related_name="+")
    request_id = models.CharField(max_length=200)
    label = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "request_id"], name="one_label_per_request")]
        indexes = [models.Index(fields=["created_at"], name="prediction_label_created")]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.label}"


class ReferenceProfile(models.Model):
    """What a version's inputs and outputs look like when nothing drifted, computed once.

    Per feature: inner bin edges (reference deciles), the reference share per bin and a
    summary; a bounded reference sample for the KS test; per output class its share.
    """

    version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE, related_name="reference_profile")
    source = models.CharField(max_length=20, help_text="evaluation_set or upload")
    rows = models.PositiveIntegerField()
    feature_names = models.JSONField(default=list)
    bin_edges = models.JSONField(default=list, help_text="per feature: the inner edges of its bins")
    bin_shares = models.JSONField(default=list, help_text="per feature: the reference share of each bin")
    summary = models.JSONField(default=dict, help_text="per feature: mean, std, min, max, nan_share")
    sample = models.BinaryField(help_text="float32 [rows kept, features]: the KS test's reference")
    class_shares = models.JSONField(default=dict, blank=True, help_text="output class -> share")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"reference of {self.version_id} ({self.source}, {self.rows} rows)"
