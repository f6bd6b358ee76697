"""The gated alias move (`PUT …/aliases/{alias}/` with `"gate": true`): its answer and its documentation.

The gates themselves are modelhub.monitoring.gates; this module turns a refusal
into the API's error shape with the gates and their figures added.
"""

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers, status
from rest_framework.response import Response

from modelhub.api.errors import error_body
from modelhub.api.schema import ErrorDetailSerializer
from modelhub.api.serializers import AliasSerializer
from modelhub.monitoring.gates import NOT_RUN, PASSED, GateFailed, promote_with_gates
from modelhub.registry.models import Alias

GATE_STATUSES = [PASSED, "failed", NOT_RUN]


class GateSerializer(serializers.Serializer):
    name = serializers.ChoiceField(["loaded", "conforms", "latency", "accuracy"])
    status = serializers.ChoiceField(GATE_STATUSES, help_text="not_run: the candidate is not loaded")
    passed = serializers.BooleanField()
    message = serializers.CharField(help_text="What the gate found, with the figures in words")
    figures = serializers.DictField(
        help_text="loaded: server, deployment (or servers_tried); latency: p50_ms, p95_ms, p99_ms, slo_ms, "
        "requests, errors; accuracy: metric, lower_is_better, candidate, current, current_source, tolerance, "
        "threshold, limit, rows"
    )


class GateRefusalSerializer(serializers.Serializer):
    error = ErrorDetailSerializer(help_text="code gate_failed; message names each failed gate and why")
    gates = GateSerializer(many=True, required=False, help_text="Every gate, in order; absent on other conflicts")


GATE_REFUSAL_RESPONSE = OpenApiResponse(
    GateRefusalSerializer,
    description="With gate=true: a gate failed (code gate_failed, `gates` has every gate and its figures) and the "
    "alias did not move. Without: conflicts with the current state.",
)


def gated_move(view, model, alias: str, version) -> Response:
    """Move `alias` to `version` past the gates: the alias, or 409 with the gates."""
    current = Alias.objects.filter(model=model, name=alias).values_list("version_id", flat=True).first()
    if current == version.pk:
        # Nothing moves, so there is nothing to gate: a re-run of a CI job succeeds.
        return Response(view.render(AliasSerializer, Alias.objects.get(model=model, name=alias)))
    try:
        moved, _ = promote_with_gates(model, alias, version, view.actor)
    except GateFailed as refusal:
        body = error_body(str(refusal), "gate_failed")
        body["gates"] = [gate.as_dict() for gate in refusal.report.gates]
        return Response(body, status=status.HTTP_409_CONFLICT)
    return Response(view.render(AliasSerializer, moved))
