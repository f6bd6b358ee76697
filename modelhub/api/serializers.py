"""What the API reads and writes. Every serializer lists its fields.

Serializers validate shape only; writes go through the domain functions
(modelhub.registry.services, modelhub.serving.services), which also write
the audit rows.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from modelhub.api.fields import HttpUrl, StrictBoolean, StrictInteger, Text
from modelhub.api.models import ApiToken
from modelhub.audit.models import AuditEvent
from modelhub.registry.models import (
    Alias,
    AliasMove,
    Model,
    ModelVersion,
    TaskKind,
    TensorSpec,
    model_name_validator,
)
from modelhub.serving.models import (
    Deployment,
    DeploymentTransition,
    InferenceServer,
    server_name_validator,
    validate_absolute_path,
)


def _link(serializer: serializers.Serializer, viewname: str, **kwargs) -> str:
    return reverse(viewname, kwargs=kwargs, request=serializer.context.get("request"))


# --- registry ----------------------------------------------------------------


class ModelSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    # Only the slug rule here: a taken name answers 409 from the domain, not 400.
    name = Text(max_length=100, validators=[model_name_validator])
    task_kind = serializers.ChoiceField(choices=TaskKind.choices, default=TaskKind.OTHER)
    description = Text(allow_blank=True, default="", max_length=10_000)
    latest_version = serializers.IntegerField(read_only=True, allow_null=True, help_text="Highest version number")
    version_count = serializers.IntegerField(read_only=True)
    aliases = serializers.SerializerMethodField(help_text="alias name -> version number")

    class Meta:
        model = Model
        fields = [
            "url",
            "name",
            "description",
            "task_kind",
            "latest_version",
            "version_count",
            "aliases",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def get_url(self, obj: Model) -> str:
        return _link(self, "api:model-detail", name=obj.name)

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField()))
    def get_aliases(self, obj: Model) -> dict[str, int]:
        return {alias.name: alias.version.number for alias in obj.aliases.all()}


class ModelUpdateSerializer(ModelSerializer):
    """The name is the model's Triton name: fixed once created."""

    name = serializers.CharField(read_only=True)

    class Meta(ModelSerializer.Meta):
        read_only_fields = ["name", "created_at", "updated_at"]


class TensorSerializer(serializers.ModelSerializer):
    dims = serializers.ListField(child=serializers.IntegerField(), help_text="-1 for a variable size")
    labels = serializers.ListField(child=serializers.CharField(), allow_null=True, required=False)

    class Meta:
        model = TensorSpec
        fields = ["name", "datatype", "dims", "labels"]


class ProvenanceSerializer(serializers.Serializer):
    git_commit = serializers.CharField(read_only=True)
    ci_run_url = serializers.CharField(read_only=True)


class VersionSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    model = serializers.CharField(source="model.name", read_only=True)
    inputs = TensorSerializer(many=True, read_only=True)
    outputs = TensorSerializer(many=True, read_only=True)
    config = serializers.JSONField(source="triton_config", read_only=True, help_text="Extra Triton model config")
    provenance = ProvenanceSerializer(source="*", read_only=True)
    metadata = serializers.JSONField(read_only=True)
    aliases = serializers.SerializerMethodField(help_text="Aliases pointing at this version")
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True)

    class Meta:
        model = ModelVersion
        fields = [
            "url",
            "model",
            "number",
            "sha256",
            "size",
            "artifact_format",
            "backend",
            "platform",
            "max_batch_size",
            "inputs",
            "outputs",
            "config",
            "provenance",
            "metadata",
            "aliases",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields

    def get_url(self, obj: ModelVersion) -> str:
        return _link(self, "api:version-detail", model_name=obj.model.name, number=obj.number)

    def get_aliases(self, obj: ModelVersion) -> list[str]:
        return sorted(alias.name for alias in obj.aliases.all())


class UploadSerializer(serializers.Serializer):
    """The multipart upload (the view reads it itself, streaming; this declares it for the schema)."""

    artifact = serializers.FileField(
        help_text="A Triton model folder packed as .zip, .tar.gz or .tar, or a bare model.onnx"
    )
    manifest = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text=(
            "JSON object: backend or platform, max_batch_size, inputs and outputs "
            "([{name, datatype, dims, labels?}]), config (extra Triton config), "
            "provenance ({git_commit, ci_run_url}), metadata, description, task_kind. "
            "May be sent as a text field or as a file part. Optional where the artifact says it all "
            "(a bare ONNX model, or an archive with a config.pbtxt)."
        ),
    )


class AliasSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    model = serializers.CharField(source="model.name", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    canary_version = serializers.IntegerField(
        source="canary_version.number",
        read_only=True,
        allow_null=True,
        help_text="The version a canary sends canary_weight percent of the traffic to; null: no canary",
    )
    canary_weight = serializers.IntegerField(
        read_only=True, help_text="Percent of the alias's traffic the canary gets (0: no canary)"
    )

    class Meta:
        model = Alias
        fields = ["url", "model", "name", "version", "canary_version", "canary_weight", "updated_at"]
        read_only_fields = fields

    def get_url(self, obj: Alias) -> str:
        return _link(self, "api:alias-detail", model_name=obj.model.name, alias=obj.name)


class AliasPointSerializer(serializers.Serializer):
    version = StrictInteger(min_value=1, max_value=2_147_483_647, help_text="Version number to point at")
    gate = StrictBoolean(
        default=False,
        help_text="Move only if the version passes the promotion gates (loaded, conforms to its schema, p95 within "
        "the model's latency SLO, accuracy no worse than the current version's minus the tolerance); "
        "otherwise 409 with the gates and their figures",
    )


class CanarySerializer(serializers.Serializer):
    version = StrictInteger(
        min_value=1, max_value=2_147_483_647, help_text="The canary: another version of the same model"
    )
    weight = StrictInteger(min_value=1, max_value=99, help_text="Percent of the alias's traffic the canary gets")


class AliasMoveSerializer(serializers.ModelSerializer):
    from_version = serializers.IntegerField(source="from_version.number", read_only=True, allow_null=True)
    to_version = serializers.IntegerField(
        source="to_version.number", read_only=True, allow_null=True, help_text="null: the alias was deleted"
    )

    class Meta:
        model = AliasMove
        fields = ["id", "alias", "from_version", "to_version", "moved_by", "created_at"]
        read_only_fields = fields


# --- serving -----------------------------------------------------------------


class ServerSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    name = Text(max_length=100, validators=[server_name_validator])
    base_url = HttpUrl(help_text="Triton's HTTP endpoint, e.g. http://triton-a:8000")
    metrics_url = HttpUrl(allow_blank=True, default="", help_text="e.g. http://triton-a:8002/metrics")
    enabled = StrictBoolean(default=True)
    labels = serializers.ListField(
        child=Text(max_length=100), max_length=50, default=list, help_text='e.g. ["staging", "gpu"]'
    )
    backends = serializers.ListField(
        child=Text(max_length=100),
        max_length=50,
        default=list,
        help_text="Backends this server has (Triton does not report them); empty means unknown",
    )
    model_repository = Text(
        max_length=500,
        allow_blank=True,
        default="",
        validators=[validate_absolute_path],
        help_text=InferenceServer._meta.get_field("model_repository").help_text,
    )
    extensions = serializers.ListField(child=serializers.CharField(), read_only=True)
    group = serializers.SlugRelatedField(
        slug_field="name",
        read_only=True,
        allow_null=True,
        help_text="The server group that found it by DNS; null if registered",
    )

    class Meta:
        model = InferenceServer
        fields = [
            "url",
            "name",
            "base_url",
            "metrics_url",
            "enabled",
            "labels",
            "backends",
            "model_repository",
            "live",
            "ready",
            "last_seen_at",
            "last_checked_at",
            "last_error",
            "triton_version",
            "extensions",
            "group",
            "address",
            "drained_at",
            "created_at",
        ]
        read_only_fields = [
            "address",
            "drained_at",
            "live",
            "ready",
            "last_seen_at",
            "last_checked_at",
            "last_error",
            "triton_version",
            "created_at",
        ]

    def get_url(self, obj: InferenceServer) -> str:
        return _link(self, "api:server-detail", name=obj.name)


class TransitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeploymentTransition
        fields = ["from_state", "to_state", "error", "created_at"]
        read_only_fields = fields


class DeploymentSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    model = serializers.CharField(source="version.model.name", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    server = serializers.CharField(source="server.name", read_only=True)
    converged = serializers.BooleanField(read_only=True, help_text="observed == desired")

    class Meta:
        model = Deployment
        fields = [
            "id",
            "url",
            "model",
            "version",
            "server",
            "desired",
            "observed",
            "converged",
            "last_error",
            "retry_at",
            "desired_at",
            "observed_at",
            "checked_at",
            "created_at",
        ]
        read_only_fields = fields

    def get_url(self, obj: Deployment) -> str:
        return _link(self, "api:deployment-detail", pk=obj.pk)


class DeploymentDetailSerializer(DeploymentSerializer):
    # A deployment that keeps failing gains a transition every retry: nest the newest only.
    LATEST_TRANSITIONS = 20

    transitions = serializers.SerializerMethodField(
        help_text=f"The {LATEST_TRANSITIONS} newest observed-state changes, newest first; all at transitions_url"
    )
    transition_count = serializers.SerializerMethodField(help_text="How many observed-state changes are kept")
    transitions_url = serializers.SerializerMethodField(help_text="Every observed-state change, paged by cursor")

    class Meta(DeploymentSerializer.Meta):
        fields = [*DeploymentSerializer.Meta.fields, "transitions", "transition_count", "transitions_url"]
        read_only_fields = fields

    @staticmethod
    def latest_transitions():
        """The queryset to prefetch into `latest_transitions` (one query for any number of deployments)."""
        order = ("-created_at", "-id")
        return DeploymentTransition.objects.order_by(*order)[: DeploymentDetailSerializer.LATEST_TRANSITIONS]

    @extend_schema_field(TransitionSerializer(many=True))
    def get_transitions(self, obj: Deployment) -> list[dict]:
        latest = getattr(obj, "latest_transitions", None)
        if latest is None:
            latest = obj.transitions.order_by("-created_at", "-id")[: self.LATEST_TRANSITIONS]
        return TransitionSerializer(latest, many=True, context=self.context).data

    def get_transition_count(self, obj: Deployment) -> int:
        count = getattr(obj, "transition_count", None)
        return obj.transitions.count() if count is None else count

    def get_transitions_url(self, obj: Deployment) -> str:
        return _link(self, "api:deployment-transitions", pk=obj.pk)


class DeployRequestSerializer(serializers.Serializer):
    server = Text(required=False, max_length=100, help_text="A server's name")
    label = Text(required=False, max_length=100, help_text="Every enabled server with this label")

    def validate(self, attrs: dict) -> dict:
        if bool(attrs.get("server")) == bool(attrs.get("label")):
            raise serializers.ValidationError("give exactly one of server or label")
        return attrs


class DeployResultSerializer(serializers.Serializer):
    deployments = DeploymentSerializer(many=True, read_only=True)


# --- audit and identity ------------------------------------------------------


class AuditEventSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True, allow_null=True)
    remote_addr = serializers.CharField(read_only=True, allow_null=True)
    details = serializers.JSONField(read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "source",
            "actor",
            "user",
            "token_id",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "details",
            "remote_addr",
        ]
        read_only_fields = fields


class TokenInfoSerializer(serializers.ModelSerializer):
    scopes = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="As issued; the caller's scopes say what remains of them",
    )
    models = serializers.SerializerMethodField(help_text="null: not restricted to some models")

    class Meta:
        model = ApiToken
        fields = ["name", "prefix", "scopes", "models", "expires_at", "created_at", "last_used_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.CharField(), allow_null=True))
    def get_models(self, obj: ApiToken) -> list[str] | None:
        if not obj.restricted:
            return None
        return sorted(obj.allowed_models.values_list("name", flat=True))


class WhoAmISerializer(serializers.Serializer):
    user = serializers.CharField(read_only=True)
    scopes = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="What this caller may do now: a token's scopes as far as its user's role allows them",
    )
    token = TokenInfoSerializer(read_only=True, allow_null=True, help_text="null for a signed-in person")
