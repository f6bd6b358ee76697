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
