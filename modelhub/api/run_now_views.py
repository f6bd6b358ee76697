"""Checks run now: one deployment's or one server's checks, run in the request and answered.

`POST /api/v1/deployments/{id}/check/` (readiness, schema, latency) and
`POST /api/v1/servers/{name}/check/` (health, metrics) need the deploy scope;
a token restricted to some models may check its models' deployments, not
servers (they are under no model). Each Triton call has its timeout, so the
answer comes within a bounded time even from a dead server.
"""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from modelhub.api.errors import Conflict
from modelhub.api.models import Scope
from modelhub.api.views import PATH_SEGMENT, SERVER_NAME, BaseViewSet, _path_param
from modelhub.monitoring.models import CheckResult
from modelhub.monitoring.run_now import CannotCheck, check_deployment_now, check_server_now
from modelhub.serving.models import Deployment, InferenceServer


class CheckRunResultSerializer(serializers.ModelSerializer):
    server = serializers.CharField(source="server.name", read_only=True, allow_null=True, default=None)
    model = serializers.CharField(source="version.model.name", read_only=True, allow_null=True, default=None)
    version = serializers.IntegerField(source="version.number", read_only=True, allow_null=True, default=None)

    class Meta:
        model = CheckResult
        fields = [
            "id",
            "kind",
            "status",
            "server",
            "deployment",
            "model",
            "version",
            "value",
            "message",
            "details",
            "created_at",
        ]
        read_only_fields = fields


class CheckRunSerializer(serializers.Serializer):
    results = CheckRunResultSerializer(many=True, help_text="The results just recorded, one per check")


def _answer(view, rows: list[CheckResult]) -> Response:
    fresh = CheckResult.objects.select_related("server", "version__model").filter(pk__in=[r.pk for r in rows])
    return Response(CheckRunSerializer({"results": fresh.order_by("id")}, context=view.get_serializer_context()).data)


class _CheckNowViewSet(BaseViewSet):
    pagination_class = None
    filter_backends: list = []
    serializer_class = CheckRunSerializer
    action_scopes = {"check": Scope.DEPLOY}


class DeploymentCheckViewSet(_CheckNowViewSet):
    """Run a deployment's checks now (409 when it is meant to be unloaded or its server is disabled)."""

    openapi_tag = "deployments"
    queryset = Deployment.objects.select_related("version__model", "server")
    lookup_value_regex = r"[0-9]{1,18}"
    model_path = "version__model"

    @extend_schema(
        summary="Check a deployment now: readiness and schema conformance, and a latency probe when it is loaded",
        description="Runs the checks in the request (each Triton call has its timeout), records the results "
        "like a scheduled pass and answers them.",
        parameters=[OpenApiParameter("id", {"type": "integer", "minimum": 1}, OpenApiParameter.PATH)],
        request=None,
        responses=CheckRunSerializer,
    )
    def check(self, request, *args, **kwargs):
        deployment = self.get_object()
        try:
            rows = check_deployment_now(deployment, self.actor)
        except CannotCheck as exc:
            raise Conflict(str(exc)) from None
        return _answer(self, rows)


class ServerCheckViewSet(_CheckNowViewSet):
    """Run a server's checks now (409 when it is disabled)."""

    openapi_tag = "servers"
    queryset = InferenceServer.objects.all()
    lookup_field = "name"
    lookup_value_regex = PATH_SEGMENT
    lookup_pattern = SERVER_NAME

    @extend_schema(
        summary="Check a server now: health (live, ready, metadata) and its metrics",
        description="Runs the checks in the request (each call has its timeout), records the results like a "
        "scheduled pass and answers them. A server that does not answer gives a failed health result, not an error.",
        parameters=[_path_param("name", SERVER_NAME, "The server's name")],
        request=None,
        responses=CheckRunSerializer,
    )
    def check(self, request, *args, **kwargs):
        server = self.get_object()
        try:
            rows = check_server_now(server, self.actor)
        except CannotCheck as exc:
            raise Conflict(str(exc)) from None
        return _answer(self, rows)
