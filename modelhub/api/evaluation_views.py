"""Evaluation sets and accuracy over the API.

`PUT/GET/DELETE /api/v1/models/{name}/evaluation-set/`: a model's evaluation set
(multipart upload of `file` plus output, metric, k, threshold, tolerance),
validated against the schema of the model's latest version.
`POST/GET /api/v1/models/{name}/versions/{n}/accuracy/`: run the accuracy check
now on a server where the version is loaded (CI calls it), or list the
version's accuracy results. Uploads and runs need the upload scope.
"""

import re
import uuid

from django.conf import settings
from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.exceptions import NotFound, UnsupportedMediaType
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from modelhub.api import uploads
from modelhub.api.errors import Conflict, Invalid, LengthRequired, TooLarge
from modelhub.api.models import Scope
from modelhub.api.permissions import check_before_body
from modelhub.api.views import (
    MODEL_PARAM,
    NUMBER_PARAM,
    SERVER_NAME,
    BaseViewSet,
    ModelScopedMixin,
)
from modelhub.audit.log import record as audit
from modelhub.monitoring.accuracy import evaluate
from modelhub.monitoring.models import CheckKind, CheckResult
from modelhub.monitoring.record import record
from modelhub.registry.evaluation import EvaluationSetError, attach_evaluation_set, remove_evaluation_set
from modelhub.registry.models import EvaluationMetric, EvaluationSet, ModelVersion
from modelhub.serving.models import Deployment, DesiredState, ObservedState
from modelhub.serving.triton_client import TritonClient

# --- serializers ------------------------------------------------------------------


class EvaluationSetSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)
    lower_is_better = serializers.BooleanField(read_only=True)

    class Meta:
        model = EvaluationSet
        fields = [
            "model",
            "file_format",
            "sha256",
            "size",
            "rows",
            "output",
            "metric",
            "k",
            "threshold",
            "tolerance",
            "lower_is_better",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields


class EvaluationSetUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="A .npz (one array per input tensor, named after it, and one named after `output`; rows along "
        "the first axis) or JSON lines, one row per line: "
        '{"inputs": {"<input>": value, ...}, "expected": value}'
    )
    output = serializers.CharField(max_length=128, help_text="The output tensor the expected values are for")
    metric = serializers.ChoiceField(choices=EvaluationMetric.choices, default=EvaluationMetric.ACCURACY)
    k = serializers.IntegerField(min_value=1, max_value=1000, default=1, help_text="k of top-k accuracy")
    threshold = serializers.FloatField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Below this (above it for MAE/RMSE) the accuracy check fails and alerts; empty = no threshold",
    )
    tolerance = serializers.FloatField(
        min_value=0,
        default=0.0,
        help_text="A gated promotion accepts a candidate scoring at most this much worse than the current version",
    )


class AccuracyResultSerializer(serializers.ModelSerializer):
    server = serializers.CharField(source="server.name", read_only=True, allow_null=True, default=None)
    version = serializers.IntegerField(source="version.number", read_only=True)
    metric = serializers.SerializerMethodField()
    baseline = serializers.SerializerMethodField(help_text="Whether this result is the version's baseline")

    class Meta:
        model = CheckResult
        fields = ["id", "status", "version", "server", "deployment", "metric", "value", "baseline", "message"]
        fields += ["details", "created_at"]
        read_only_fields = fields

    def get_metric(self, row: CheckResult) -> str | None:
        return row.details.get("metric")

    def get_baseline(self, row: CheckResult) -> bool:
        return row.pk in self.context.get("baseline_ids", ())


# --- evaluation sets --------------------------------------------------------------


class EvaluationUploadHandler(uploads.ArtifactUploadHandler):
    """The artifact upload handler (streamed to a temporary file, hashed), capped at the
    evaluation set's own limit."""

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if self.received + len(raw_data) > settings.MAX_EVALUATION_BYTES:
            self.discard()
            raise _too_large()
        return super().receive_data_chunk(raw_data, start)


def _too_large() -> TooLarge:
    return TooLarge(
        f"the evaluation set is larger than the limit of {settings.MAX_EVALUATION_BYTES} bytes "
        "(setting MODELHUB_MAX_EVALUATION_BYTES)"
    )


def _check_length(request) -> None:
    raw = (request.META.get("CONTENT_LENGTH") or "").strip()
    if not raw.isdigit():
        raise LengthRequired("the upload has no Content-Length header: send the multipart body with its length")
    if int(raw) > settings.MAX_EVALUATION_BYTES + settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise _too_large()


class EvaluationSetViewSet(ModelScopedMixin, BaseViewSet):
    """A model's evaluation set: what the accuracy check sends through Triton and how it scores it."""

    openapi_tag = "evaluation"
    queryset = EvaluationSet.objects.all()
    serializer_class = EvaluationSetSerializer
    pagination_class = None
    filter_backends: list = []
    model_path = "model"
    action_scopes = {"update": Scope.UPLOAD, "destroy": Scope.UPLOAD}

    def initialize_request(self, request, *args, **kwargs):
        request = super().initialize_request(request, *args, **kwargs)
        if self.action == "update":
            request.parsers = [MultiPartParser()]
        return request

    def initial(self, request, *args, **kwargs):
        if self.action == "update":
            check_before_body(self, request)  # refused callers never get a byte onto the disk
            handler = EvaluationUploadHandler(request._request)
            request._request.upload_handlers = [handler]
            self.upload_handler = handler
        super().initial(request, *args, **kwargs)

    def get_object(self) -> EvaluationSet:
        # The set is found by its model's name (one per model), not by a key in the URL.
        return self._evaluation_set()

    def _evaluation_set(self) -> EvaluationSet:
        model = self.get_parent_model()
        found = EvaluationSet.objects.select_related("model", "created_by").filter(model=model).first()
        if found is None:
            raise NotFound(f"model {model.name!r} has no evaluation set")
        return found

    @extend_schema(summary="Read a model's evaluation set", parameters=[MODEL_PARAM], responses=EvaluationSetSerializer)
    def retrieve(self, request, *args, **kwargs):
        return Response(self.render(EvaluationSetSerializer, self._evaluation_set()))

    @extend_schema(
        summary="Attach (or replace) a model's evaluation set",
        description="Multipart upload of the set and how to score it. The set is validated against the schema "
        "of the model's latest version: every input present, values castable to its datatype, each row's shape "
        "within its dims, the expected values fit for the metric (labels for accuracy, top-k and macro F1; "
        "numbers for MAE and RMSE). A refusal (400) names the row, the field and what is wrong.",
        parameters=[MODEL_PARAM],
        request={"multipart/form-data": EvaluationSetUploadSerializer},
        responses={
            201: OpenApiResponse(EvaluationSetSerializer, description="The model had no evaluation set"),
            200: OpenApiResponse(EvaluationSetSerializer, description="The model's earlier set was replaced"),
        },
    )
    def update(self, request, *args, **kwargs):
        try:
            return self._upload(request)
        finally:
            self.upload_handler.discard()

    def _upload(self, request) -> Response:
        _check_length(request)
        if not (request.content_type or "").startswith("multipart/form-data"):
            raise UnsupportedMediaType(request.content_type, "upload as multipart/form-data with a file field")
        model = self.get_parent_model()
        serializer = EvaluationSetUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        upload = data["file"]
        if upload.size == 0:
            raise Invalid({"file": "the uploaded file is empty"})
        existed = EvaluationSet.objects.filter(model=model).exists()
        try:
            evaluation_set = attach_evaluation_set(
                model,
                upload.temporary_file_path(),
                self.actor,
                output=data["output"],
                metric=data["metric"],
                k=data["k"],
                threshold=data["threshold"],
                tolerance=data["tolerance"],
                sha256=getattr(upload, "sha256", None),
                size=upload.size,
                consume=True,
            )
        except EvaluationSetError as exc:
            raise Invalid(exc.errors) from None
        body = self.render(EvaluationSetSerializer, evaluation_set)
        return Response(body, status=status.HTTP_200_OK if existed else status.HTTP_201_CREATED)

    @extend_schema(summary="Remove a model's evaluation set", parameters=[MODEL_PARAM], responses={204: None})
    def destroy(self, request, *args, **kwargs):
        evaluation_set = self._evaluation_set()
        try:
            remove_evaluation_set(evaluation_set.model, self.actor)
        except EvaluationSet.DoesNotExist:
            raise NotFound(f"model {evaluation_set.model.name!r} has no evaluation set") from None
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- accuracy -----------------------------------------------------------------------


def baseline_ids(version: ModelVersion) -> set[int]:
    """The ids of the version's baseline results: its first result with a figure, per evaluation set."""
    first: dict[str, int] = {}
    rows = (
        CheckResult.objects.filter(kind=CheckKind.ACCURACY, version=version, value__isnull=False)
        .order_by("created_at", "id")
        .values_list("id", "details__evaluation_set")
    )
    for pk, sha in rows:
        first.setdefault(sha, pk)
    return set(first.values())


SERVER_QUERY = OpenApiParameter(
    "server",
    {"type": "string", "pattern": f"^{SERVER_NAME}$"},
    OpenApiParameter.QUERY,
    description="Run on this server (default: any enabled server where the version is loaded)",
)


class AccuracyViewSet(ModelScopedMixin, mixins.ListModelMixin, BaseViewSet):
    """A version's accuracy: run the check now, or read its results."""

    openapi_tag = "evaluation"
    queryset = CheckResult.objects.all()
    serializer_class = AccuracyResultSerializer
    filter_backends: list = []
    model_path = "version__model"
    action_scopes = {"create": Scope.UPLOAD}

    def get_version(self) -> ModelVersion:
        model = self.get_parent_model()
        number = self.kwargs["number"]
        version = None
        if re.fullmatch(r"[0-9]{1,9}", number):
            version = model.versions.prefetch_related("tensors").filter(number=int(number)).first()
        if version is None:
            raise NotFound(f"model {model.name!r} has no version {number}")
        return version

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return CheckResult.objects.none()
        return (
            CheckResult.objects.filter(kind=CheckKind.ACCURACY, version=self.get_version())
            .select_related("server", "version")
            .order_by("-created_at", "-id")
        )

    def _render(self, rows, **kwargs):
        context = {**self.get_serializer_context(), "baseline_ids": baseline_ids(self.get_version())}
        return AccuracyResultSerializer(rows, context=context, **kwargs).data

    @extend_schema(
        summary="A version's accuracy results, newest first (its baseline marked)",
        parameters=[MODEL_PARAM, NUMBER_PARAM],
    )
    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self._render(page, many=True))

    @extend_schema(
        summary="Run the accuracy check of a version now",
        description="Sends the model's evaluation set through a server where the version is loaded, in the "
        "request (bounded by MODELHUB_ACCURACY_API_TIMEOUT_S), records the result like a scheduled run and "
        "answers it: status ok/fail, the metric's value, the baseline. 409 when it cannot run: the model has "
        "no evaluation set, or the version is not loaded on any (or the named) server.",
        parameters=[MODEL_PARAM, NUMBER_PARAM, SERVER_QUERY],
        request=None,
        responses={200: AccuracyResultSerializer},
    )
    def create(self, request, *args, **kwargs):
        version = self.get_version()
        evaluation_set = EvaluationSet.objects.filter(model_id=version.model_id).first()
        if evaluation_set is None:
            raise Conflict(
                f"model {version.model.name!r} has no evaluation set: "
                f"PUT one at /api/v1/models/{version.model.name}/evaluation-set/ first"
            )
        deployment = self._loaded_deployment(version, request.query_params.get("server"))
        client = TritonClient.for_server(deployment.server)
        try:
            result = evaluate(client, deployment, evaluation_set, time_limit_s=settings.ACCURACY_API_TIMEOUT_S)
        finally:
            client.close()
        with transaction.atomic():  # the result and its audit row together
            rows = record([result], f"api:{uuid.uuid4().hex}")
            audit(self.actor, "accuracy.run", version, server=deployment.server.name, status=result.status)
        row = CheckResult.objects.select_related("server", "version").get(pk=rows[0].pk)
        return Response(self._render(row))

    def _loaded_deployment(self, version: ModelVersion, server: str | None) -> Deployment:
        loaded = Deployment.objects.select_related("server", "version__model").filter(
            version=version, desired=DesiredState.LOADED, observed=ObservedState.LOADED, server__enabled=True
        )
        if server:
            deployment = loaded.filter(server__name=server).first()
            if deployment is None:
                raise Conflict(f"{version} is not loaded on a server named {server!r}: deploy it there first")
            return deployment
        deployment = loaded.order_by("server__name").first()
        if deployment is None:
            raise Conflict(f"{version} is not loaded on any enabled server: deploy it first")
        return deployment
