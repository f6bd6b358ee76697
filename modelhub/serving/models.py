from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from modelhub.registry.models import ModelVersion

server_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_.-]{0,99}$", "use 1-100 lowercase letters, digits, '.', '-' or '_'"
)


def validate_http_url(value: str) -> None:
    # Not URLValidator: it refuses cluster-internal hosts such as http://triton-a:8000.
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValidationError(f"{value!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"{value!r} must be an http:// or https:// URL with a host")


# Only the form here: the web process may not see the folder at all (it is the
# worker's, or a volume shared with Triton). The reconciler checks it can write there.
# A regex, so the API schema carries it as a pattern.
validate_absolute_path = RegexValidator(r"^/[^\x00]*$", "%(value)r must be an absolute path, e.g. /srv/triton/models")


class InferenceServer(models.Model):
    """A Triton server ModelHub manages, reached over its HTTP endpoint."""

    name = models.CharField(max_length=100, unique=True, validators=[server_name_validator])
    base_url = models.CharField(
        max_length=300, validators=[validate_http_url], help_text="Triton's HTTP endpoint, e.g. http://triton-a:8000"
    )
    metrics_url = models.CharField(
        max_length=300,
        blank=True,
        validators=[validate_http_url],
        help_text="Prometheus metrics, e.g. http://triton-a:8002/metrics",
    )
    enabled = models.BooleanField(default=True)
    labels = models.JSONField(default=list, blank=True, help_text='e.g. ["staging", "gpu"]: deploy to all with a label')
    backends = models.JSONField(
        default=list,
        blank=True,
        help_text="Backends this server has (Triton does not report them); empty means unknown",
    )
    model_repository = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_absolute_path],
        help_text="A folder ModelHub can write that this Triton reads as its --model-repository (a shared volume, "
        "or the same host), this server's alone; empty = send the model's files inside each load request",
    )
    # What Triton last told us about itself.
    live = models.BooleanField(null=True, blank=True)
    ready = models.BooleanField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    triton_version = models.CharField(max_length=32, blank=True)
    extensions = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DesiredState(models.TextChoices):
    LOADED = "loaded"
    UNLOADED = "unloaded"


class ObservedState(models.TextChoices):
    PENDING = "pending", "pending (not yet reconciled)"
    LOADED = "loaded"
    UNLOADED = "unloaded"
    FAILED = "failed"


class Deployment(models.Model):
    """One version on one server: what should be (desired) and what is (observed).

    `observed`, `last_error`, `observed_at` and `checked_at` change in one place only:
    modelhub.serving.transitions.observe().
    """

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    server = models.ForeignKey(InferenceServer, on_delete=models.PROTECT, related_name="deployments")
    desired = models.CharField(max_length=10, choices=DesiredState.choices, default=DesiredState.LOADED)
    observed = models.CharField(max_length=10, choices=ObservedState.choices, default=ObservedState.PENDING)
    last_error = models.TextField(blank=True, help_text="What Triton (or the network) said on the last failure")
    retry_at = models.DateTimeField(null=True, blank=True, help_text="After a failed load, when to try again")
    created_at = models.DateTimeField(auto_now_add=True)
    desired_at = models.DateTimeField(auto_now_add=True)
    observed_at = models.DateTimeField(null=True, blank=True, help_text="When the observed state last changed")
    checked_at = models.DateTimeField(
        null=True, blank=True, help_text="When the reconciler last looked (compare with desired_at)"
    )

    class Meta:
        ordering = ["server__name", "version__model__name", "-version__number"]
        constraints = [
            models.UniqueConstraint(fields=["version", "server"], name="one_deployment_per_version_and_server")
        ]
        indexes = [models.Index(fields=["server", "desired"])]

    def __str__(self) -> str:
        return f"{self.version} on {self.server}"

    @property
    def converged(self) -> bool:
        return self.desired == self.observed


class DeploymentTransition(models.Model):
    """Each change of a deployment's observed state, as a row."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=10, choices=ObservedState.choices)
    to_state = models.CharField(max_length=10, choices=ObservedState.choices)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Retention deletes by age across every deployment.
        indexes = [models.Index(fields=["created_at"], name="transition_created_at")]

    def __str__(self) -> str:
        return f"{self.deployment}: {self.from_state} -> {self.to_state}"


def triton_model_name(model: str, version: int) -> str:
    """The name Triton serves `version` of `model` under, for the checks and the gateway.

    Today the reconciler loads every version of a model under the model's own name;
    per-version names (versions whose configs differ, side by side for a canary) start here."""
    return model
