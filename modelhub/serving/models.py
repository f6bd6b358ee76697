import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from modelhub.lib.urls import CREDENTIALS_REFUSED, has_credentials, hide_credentials
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
        raise ValidationError(f"{hide_credentials(value)!r} must be an http:// or https:// URL with a host")
    if has_credentials(value):
        raise ValidationError(f"{hide_credentials(value)!r} {CREDENTIALS_REFUSED}")


# Only the form here: the web process may not see the folder at all (it is the
# worker's, or a volume shared with Triton). The reconciler checks it can write there.
# A regex, so the API schema carries it as a pattern.
validate_absolute_path = RegexValidator(r"^/[^\x00]*$", "%(value)r must be an absolute path, e.g. /srv/triton/models")


dns_name_validator = RegexValidator(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
    "use a DNS name: dot-separated labels of 1-63 letters, digits or '-' (not first or last)",
)
# Discovered servers are named "<group>-<address>": the group's name leaves room for an IPv6 address.
group_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_.-]{0,49}$", "use 1-50 lowercase letters, digits, '.', '-' or '_'"
)


class ServerGroup(models.Model):
    """A DNS name that resolves to several Triton servers (a Kubernetes headless service).

    modelhub.serving.discovery keeps one InferenceServer per address it resolves to:
    an address that appears becomes a server with the group's labels and backends, one
    that disappears drains its server, one that comes back re-enables it.
    """

    name = models.CharField(max_length=50, unique=True, validators=[group_name_validator])
    dns_name = models.CharField(
        max_length=253, validators=[dns_name_validator], help_text="e.g. triton.models.svc.cluster.local"
    )
    scheme = models.CharField(max_length=5, choices=[("http", "http"), ("https", "https")], default="http")
    port = models.PositiveIntegerField(
        default=8000, validators=[MinValueValidator(1), MaxValueValidator(65535)], help_text="Triton's HTTP port"
    )
    metrics_port = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
        help_text="Triton's metrics port (e.g. 8002); empty = no metrics URL",
    )
    labels = models.JSONField(default=list, blank=True, help_text="Given to every server of the group")
    backends = models.JSONField(default=list, blank=True, help_text="Given to every server of the group")
    enabled = models.BooleanField(
        default=True, help_text="Disabled: the name is not resolved, servers stay as they are"
    )
    interval_s = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(5), MaxValueValidator(24 * 3600)],
        help_text="How often the name is resolved again (seconds)",
    )
    # What the last resolution found (the discovery task is the only writer).
    addresses = models.JSONField(default=list, blank=True)
    last_resolved_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


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
    # Servers found by DNS (modelhub.serving.discovery): the group and the address it stands for.
    group = models.ForeignKey(
        ServerGroup, null=True, blank=True, on_delete=models.PROTECT, related_name="servers", editable=False
    )
    address = models.GenericIPAddressField(null=True, blank=True, editable=False)
    # Set while the server's address is gone from its group's DNS name: nothing is sent to
    # it (no loads, unloads or checks) and its deployments read "drained" until it is back.
    drained_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["group", "address"],
                condition=models.Q(group__isnull=False),
                name="one_server_per_group_address",
            )
        ]

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
    DRAINED = "drained", "drained (the server left its DNS group)"


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


# Every version is its own Triton model, `<model>__v<n>`, holding only that
# version (as Triton version directory n, so the number Triton reports, its
# metrics' `version` label and the gateway's /versions/<n> are the registry's).
# Versions whose configs differ (schema, batching, backend) then run side by
# side, and loading or unloading one never reloads another. Model names are
# `[a-z0-9][a-z0-9_-]*`, so one may itself contain "__v"; the suffix is the
# *last* "__v" followed by digits only, so the name parses back to exactly one
# (model, version) and no two of them share a Triton name.
TRITON_VERSION_SEPARATOR = "__v"
_TRITON_NAME = re.compile(r"^(?P<model>[a-z0-9][a-z0-9_-]*)__v(?P<version>[1-9][0-9]*)$")


def triton_model_name(model: str, version: int) -> str:
    """The name Triton serves `version` of `model` under (reconciler, checks, gateway, pages)."""
    return f"{model}{TRITON_VERSION_SEPARATOR}{version}"


def parse_triton_model_name(name: str) -> tuple[str, int] | None:
    """(model, version) of a Triton name made by triton_model_name; None for any other
    name (a model ModelHub does not manage)."""
    match = _TRITON_NAME.match(name)
    if match is None:
        return None
    return match["model"], int(match["version"])
