"""The REST API of what the checks found: check results, and the time series behind the charts.

A token restricted to some models reads its models' results and the servers'
own results (server health and metrics are under no model, and such a token
reads servers: modelhub.api.permissions). Series are narrower: it reads those of
its models' deployments and versions only; any other target answers as one
that does not exist.
"""

import re
from datetime import UTC, datetime, timedelta

import django_filters as filters
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import mixins, serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from modelhub.api.errors import Invalid
from modelhub.api.filters import (
    MAX_INT,
    ChoiceFilter,
    CursorPagination,
    DateTimeFilter,
    RFC3339Field,
    StrictIntegerField,
    VersionNumberFilter,
)
from modelhub.api.models import Scope
from modelhub.api.permissions import HasScope, allowed_model_ids
from modelhub.api.schema import ErrorSerializer, ModelHubAutoSchema
from modelhub.api.views import BaseViewSet
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.monitoring.series import KNOWN_METRICS, MAX_POINTS, has_points, read_series, series_for_target
from modelhub.registry.models import Model, ModelVersion
from modelhub.serving.models import Deployment, InferenceServer

METRIC = r"[a-z][a-z0-9_]{0,63}"
TARGET = r"(server|deployment|version):[1-9][0-9]{0,17}"
MAX_SERIES_POINTS = 10_000
MAX_SERIES_RANGE = timedelta(days=800)
DEFAULT_SERIES_RANGE = timedelta(hours=24)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- check results --------------------------------------------------------------------


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_INT})
class IdFilter(filters.NumberFilter):
    field_class = StrictIntegerField

    def __init__(self, *args, **kwargs):
        super().__init__(*args, min_value=1, max_value=MAX_INT, **kwargs)


class CheckResultFilter(filters.FilterSet):
    kind = ChoiceFilter(choices=CheckKind.choices)
    status = ChoiceFilter(choices=Status.choices)
    server = filters.CharFilter(field_name="server__name", help_text="Server name")
    model = filters.CharFilter(field_name="version__model__name", help_text="Model name")
    version = VersionNumberFilter(method="filter_version", help_text="Version number (with model)")
    deployment = IdFilter(field_name="deployment_id", help_text="Deployment id")
    since = DateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = DateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = CheckResult
        fields = ["kind", "status", "server", "model", "version", "deployment", "since", "until"]

    def filter_version(self, queryset, name, value):
        if not self.form.cleaned_data.get("model"):
            raise DRFValidationError({"version": "a version number needs the model too: add model=<name>"})
        return queryset.filter(version__number=value)


class CheckResultSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    server = serializers.CharField(source="server.name", allow_null=True, default=None, read_only=True)
    model = serializers.CharField(source="version.model.name", allow_null=True, default=None, read_only=True)
    version = serializers.IntegerField(source="version.number", allow_null=True, default=None, read_only=True)
    deployment = serializers.IntegerField(source="deployment_id", allow_null=True, read_only=True)
    details = serializers.JSONField(read_only=True, help_text="The figures behind the verdict, by kind")

    class Meta:
        model = CheckResult
        fields = [
            "id",
            "url",
            "kind",
            "status",
            "server",
            "model",
            "version",
            "deployment",
            "value",
            "message",
            "details",
            "created_at",
        ]
        read_only_fields = fields

    def get_url(self, result: CheckResult) -> str:
        return reverse("api:check-result-detail", kwargs={"pk": result.pk}, request=self.context.get("request"))


@extend_schema_view(
    list=extend_schema(summary="Check results, newest first, paged by cursor"),
    retrieve=extend_schema(
        summary="Read a check result",
        parameters=[OpenApiParameter("id", {"type": "integer", "minimum": 1}, OpenApiParameter.PATH)],
    ),
)
class CheckResultViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BaseViewSet):
    """What each check found: server health, readiness, schema, latency, statistics, metrics, accuracy, memory."""

    openapi_tag = "monitoring"
    queryset = CheckResult.objects.select_related("server", "version__model")
    serializer_class = CheckResultSerializer
    lookup_value_regex = r"[0-9]{1,18}"
    model_path = "version__model"
    filterset_class = CheckResultFilter
    pagination_class = CursorPagination  # an ever-growing table: no COUNT, no OFFSET
    ordering_fields = ["created_at", "id"]
    ordering = ["-created_at", "-id"]

    def restrict(self, queryset, path: str | None):
        # Results of a server alone (health, metrics) are under no model: readable like servers.
        ids = allowed_model_ids(self.request)
        if ids is None:
            return queryset
        return queryset.filter(Q(version__model__in=ids) | Q(version__isnull=True))


# --- series -----------------------------------------------------------------------------


class SeriesPointSerializer(serializers.Serializer):
    time = serializers.DateTimeField(help_text="Start of the bucket")
    mean = serializers.FloatField()
    min = serializers.FloatField()
    max = serializers.FloatField()
    count = serializers.IntegerField(help_text="Raw points in the bucket")


class SeriesSerializer(serializers.Serializer):
    metric = serializers.CharField()
    target = serializers.CharField()
    label = serializers.CharField(help_text="What the target is, in words: e.g. digits v3 on gpu-1")
    resolution = serializers.ChoiceField(
        choices=["raw", "minute", "hour"], help_text="What the buckets were computed from: raw points or roll-ups"
    )
    bucket_seconds = serializers.IntegerField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    points = SeriesPointSerializer(many=True)


class AvailableSeriesSerializer(serializers.Serializer):
    target = serializers.CharField()
    label = serializers.CharField()
    metrics = serializers.ListField(child=serializers.CharField(), help_text="Metrics with points for this target")


TARGET_PARAM = OpenApiParameter(
    "target",
    {"type": "string", "pattern": f"^{TARGET}$"},
    OpenApiParameter.QUERY,
    required=True,
    description='e.g. "server:3", "deployment:12", "version:5"',
)
SERIES_PARAMS = [
    OpenApiParameter(
        "metric",
        {"type": "string", "pattern": f"^{METRIC}$"},
        OpenApiParameter.QUERY,
        required=True,
        description="e.g. latency_p95_ms, failure_rate, cpu_util, accuracy (GET /api/v1/series/available/ lists them)",
    ),
    TARGET_PARAM,
    OpenApiParameter(
        "start",
        {"type": "string", "format": "date-time"},
        OpenApiParameter.QUERY,
        description="RFC 3339; default: 24 hours before end",
    ),
    OpenApiParameter(
        "end", {"type": "string", "format": "date-time"}, OpenApiParameter.QUERY, description="RFC 3339; default: now"
    ),
    OpenApiParameter(
        "max_points",
        {"type": "integer", "minimum": 1, "maximum": MAX_SERIES_POINTS},
        OpenApiParameter.QUERY,
        description=f"At most this many buckets (default {MAX_POINTS})",
    ),
]
_BAD_QUERY = OpenApiResponse(ErrorSerializer, description="A parameter is missing or wrong; `error.fields` names it")


class SeriesBase(APIView):
    permission_classes = [IsAuthenticated, HasScope]
    schema = ModelHubAutoSchema()
    openapi_tag = "monitoring"
    # Passes the permission module's check for tokens restricted to some models; the
    # target itself is then checked against the token's models (resolve_target).
    restricted_reads_all = True
    queryset = CheckResult.objects.none()  # names the rows in the permission module's refusals

    def required_scope(self, request) -> str:
        return Scope.READ

    def resolve_target(self, raw: str | None) -> tuple[str, str]:
        """The target's key and its label, or 400 naming it (403 for a server with a restricted token)."""
        if raw is None:
            raise Invalid({"target": 'required, e.g. "deployment:12"'})
        if not re.fullmatch(TARGET, raw):
            raise Invalid({"target": f'{raw!r} is not "server:<id>", "deployment:<id>" or "version:<id>"'})
        kind, pk = raw.split(":")
        ids = allowed_model_ids(self.request)
        label = None
        if kind == "server":
            if ids is not None:
                names = ", ".join(Model.objects.filter(pk__in=ids).order_by("name").values_list("name", flat=True))
                raise PermissionDenied(
                    f"this API token is restricted to the models {names or 'none left'}: it cannot read server "
                    "series; ask for a deployment:<id> or version:<id> of those models"
                )
            server = InferenceServer.objects.filter(pk=pk).first()
            label = server and server.name
        elif kind == "deployment":
            deployments = Deployment.objects.select_related("version__model", "server")
            if ids is not None:
                deployments = deployments.filter(version__model__in=ids)
            deployment = deployments.filter(pk=pk).first()
            label = deployment and f"{deployment.version} on {deployment.server.name}"
        else:
            versions = ModelVersion.objects.select_related("model")
            if ids is not None:
                versions = versions.filter(model__in=ids)
            version = versions.filter(pk=pk).first()
            label = version and str(version)
        if label is None:  # also another model's, for a restricted token: as if it did not exist
            raise Invalid({"target": f"no {kind} with id {pk}"})
        return raw, label


def _moment(params, name: str, default: datetime) -> datetime:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return RFC3339Field().to_python(raw)
    except Exception as exc:  # django.forms.ValidationError, with its message
        message = "; ".join(getattr(exc, "messages", [str(exc)])).replace("%%", "%")
        raise Invalid({name: message}) from None


def _max_points(params) -> int:
    raw = params.get("max_points")
    if raw is None:
        return MAX_POINTS
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= MAX_SERIES_POINTS:
        raise Invalid({"max_points": f"{raw!r} is not an integer from 1 to {MAX_SERIES_POINTS}"})
    return int(raw)


class SeriesView(SeriesBase):
    """One series (metric x target) over a time range, in buckets computed by the database."""

    @extend_schema(
        summary="One series over a time range, bucketed: mean, min, max and count per bucket",
        description=(
            "Short recent ranges are computed from raw points, longer ones from per-minute or per-hour "
            "roll-ups (see `resolution`); never more than `max_points` buckets."
        ),
        parameters=SERIES_PARAMS,
        responses={200: SeriesSerializer, 400: _BAD_QUERY},
    )
    def get(self, request):
        params = request.query_params
        target, label = self.resolve_target(params.get("target"))
        metric = params.get("metric")
        if metric is None:
            raise Invalid({"metric": "required, e.g. latency_p95_ms"})
        kind = target.partition(":")[0]
        if not re.fullmatch(METRIC, metric) or (
            metric not in KNOWN_METRICS.get(kind, ()) and not has_points(metric, target)
        ):
            known = ", ".join(series_for_target(target)) or "none yet"
            raise Invalid({"metric": f"unknown metric {metric!r} for {target}; it has: {known}"})
        end = _moment(params, "end", timezone.now())
        start = _moment(params, "start", end - DEFAULT_SERIES_RANGE)
        if start < EPOCH:
            raise Invalid({"start": "must not be before 1970-01-01T00:00:00Z"})
        if start >= end:
            raise Invalid({"start": f"must be before end ({start.isoformat()} is not before {end.isoformat()})"})
        if end - start > MAX_SERIES_RANGE:
            raise Invalid({"start": f"the range from start to end may span at most {MAX_SERIES_RANGE.days} days"})
        series = read_series(metric, target, start, end, max_points=_max_points(params))
        body = {**series.__dict__, "label": label}
        return Response(SeriesSerializer(body).data)


class SeriesAvailableView(SeriesBase):
    """The metrics a target has points for."""

    @extend_schema(
        summary="Which metrics a target has series of",
        parameters=[TARGET_PARAM],
        responses={200: AvailableSeriesSerializer, 400: _BAD_QUERY},
    )
    def get(self, request):
        target, label = self.resolve_target(request.query_params.get("target"))
        return Response({"target": target, "label": label, "metrics": series_for_target(target)})
