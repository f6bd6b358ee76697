"""Prediction logs, late labels and reference samples over the API (drift and live accuracy).

`POST /api/v1/models/{name}/versions/{n}/predictions/`: prediction logs of applications
that call Triton directly, checked against the version's schema (a 400 names the record
and the tensor). `POST /api/v1/models/{name}/labels/`: ground truth for logged request
ids. `PUT /api/v1/models/{name}/versions/{n}/reference/`: a reference sample (same
records) that replaces the version's drift reference profile. All need the upload scope.
"""

import re

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from modelhub.api.errors import Invalid
from modelhub.api.fields import Text
from modelhub.api.models import Scope
from modelhub.api.views import MODEL_PARAM, NUMBER_PARAM, BaseViewSet, ModelScopedMixin
from modelhub.monitoring.drift import set_uploaded_reference
from modelhub.monitoring.models import PredictionLabel
from modelhub.monitoring.sampling import SampleError, record_labels, write_prediction_logs
from modelhub.registry.models import ModelVersion

MAX_RECORDS = 10_000


class PredictionRecordSerializer(serializers.Serializer):
    request_id = Text(max_length=200)
    time = serializers.DateTimeField(required=False, help_text="When it was predicted (default: now)")
    inputs = serializers.DictField(help_text="Input tensor name -> its value for this one sample (no batch dim)")
    outputs = serializers.DictField(help_text="Output tensor name -> its value for this one sample")


class LabelSerializer(serializers.Serializer):
    request_id = Text(max_length=200)
    label = Text(max_length=200, help_text="The true class (its label, or its index as a string)")


class AcceptedSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()


def _validated(serializer_class, data) -> list[dict]:
    serializer = serializer_class(data=data, many=True, max_length=MAX_RECORDS)
    if not serializer.is_valid():
        raise Invalid(_first_errors(serializer.errors))
    return serializer.validated_data


def _first_errors(errors) -> dict[str, str]:
    """The first bad record's problems, keyed `[i].field` (or `[i]` when the record is not an
    object at all), else the list's own problem (not a list, too long)."""
    # DRF keys a list's errors by record index (a dict when some records are good, or a list
    # with {} for the good ones); a record that is not an object has a list of messages.
    by_index = dict(enumerate(errors)) if isinstance(errors, list) else dict(errors)
    for i in sorted(k for k in by_index if isinstance(k, int)):
        record = by_index[i]
        if isinstance(record, dict) and record:
            return {f"[{i}].{field}": " ".join(map(str, problems)) for field, problems in record.items()}
        if isinstance(record, list) and record:
            return {f"[{i}]": " ".join(map(str, record))}
    own = by_index.get("non_field_errors", [v for k, v in by_index.items() if not isinstance(k, int)])
    return {"": " ".join(map(str, own)) or "invalid records"}


class VersionRecordsMixin(ModelScopedMixin):
    def get_version(self) -> ModelVersion:
        model = self.get_parent_model()
        number = self.kwargs["number"]
        version = None
        if re.fullmatch(r"[0-9]{1,9}", number):
            version = model.versions.select_related("model").prefetch_related("tensors").filter(number=int(number))
            version = version.first()
        if version is None:
            raise NotFound(f"model {model.name!r} has no version {number}")
        return version

    def get_object(self) -> ModelVersion:
        # The records belong to the version the URL names (what OPTIONS asks about too).
        return self.get_version()


class PredictionLogViewSet(VersionRecordsMixin, BaseViewSet):
    """Prediction logs of a version: what drift and live accuracy are computed from."""

    openapi_tag = "drift"
    model_path = "model"
    action_scopes = {"create": Scope.UPLOAD}
    pagination_class = None
    filter_backends: list = []
    serializer_class = PredictionRecordSerializer
    queryset = ModelVersion.objects.none()  # the version comes from the URL (get_version)

    @extend_schema(
        summary="Upload prediction logs of a version",
        description="A JSON list of records {request_id, time (optional), inputs {name: value}, outputs "
        "{name: value}}, one sample each, at most 10,000 per call. Every input and output of the version's "
        "schema is required, with the schema's number of values. A 400 names the record and the tensor. "
        "An empty list stores nothing.",
        parameters=[MODEL_PARAM, NUMBER_PARAM],
        request=PredictionRecordSerializer(many=True),
        responses={201: AcceptedSerializer},
    )
    def create(self, request, *args, **kwargs):
        version = self.get_version()
        records = _validated(PredictionRecordSerializer, request.data)
        try:
            accepted = write_prediction_logs(version, records, self.actor)
        except SampleError as exc:
            raise Invalid({exc.field: exc.problem}) from None
        return Response({"accepted": accepted}, status=status.HTTP_201_CREATED)


class ReferenceViewSet(VersionRecordsMixin, BaseViewSet):
    """A version's drift reference, from an uploaded sample instead of the evaluation set."""

    openapi_tag = "drift"
    model_path = "model"
    action_scopes = {"update": Scope.UPLOAD}
    pagination_class = None
    filter_backends: list = []
    serializer_class = PredictionRecordSerializer
    queryset = ModelVersion.objects.none()

    @extend_schema(
        summary="Upload a reference sample of a version (replaces its drift reference profile)",
        description="The same records as prediction logs. The profile (per-feature decile bins and summary, "
        "output class shares) is computed from them at once and replaces any earlier one. An empty list "
        "removes an uploaded reference: the evaluation set's is used again.",
        parameters=[MODEL_PARAM, NUMBER_PARAM],
        request=PredictionRecordSerializer(many=True),
        responses={201: AcceptedSerializer},
    )
    def update(self, request, *args, **kwargs):
        version = self.get_version()
        records = _validated(PredictionRecordSerializer, request.data)
        try:
            rows = set_uploaded_reference(version, records, self.actor)
        except SampleError as exc:
            raise Invalid({exc.field: exc.problem}) from None
        return Response({"accepted": rows}, status=status.HTTP_201_CREATED)


class LabelViewSet(ModelScopedMixin, BaseViewSet):
    """Late ground truth for logged request ids of a model: live accuracy."""

    openapi_tag = "drift"
    model_path = "model"
    action_scopes = {"create": Scope.UPLOAD}
    pagination_class = None
    filter_backends: list = []
    serializer_class = LabelSerializer
    queryset = PredictionLabel.objects.none()

    @extend_schema(
        summary="Post ground truth for logged request ids",
        description="A JSON list of {request_id, label}, at most 10,000 per call. A request id labelled again "
        "takes the newer label. Live accuracy (series live_accuracy of each version) counts the labelled ones.",
        parameters=[MODEL_PARAM],
        request=LabelSerializer(many=True),
        responses={201: AcceptedSerializer},
    )
    def create(self, request, *args, **kwargs):
        model = self.get_parent_model()
        rows = _validated(LabelSerializer, request.data)
        accepted = record_labels(model, ((row["request_id"], row["label"]) for row in rows), self.actor)
        return Response({"accepted": accepted}, status=status.HTTP_201_CREATED)
