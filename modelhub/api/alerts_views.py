"""Alerts and alert rules over REST: thin views over modelhub.alerts.services.

Alerts: list (firing first), detail with flips and send attempts, acknowledge,
silence and unsilence (deploy scope: operators). Rules: read scope to read,
deploy scope to write. A token restricted to some models sees and writes its
models' rules and alerts only; global and server rules and alerts are under no
model, so it may neither read nor write them.
"""

from datetime import timedelta

import django_filters as filters
from django.contrib.auth.models import Group
from django.db.models import Case, IntegerField, Prefetch, Value, When
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from modelhub.alerts.models import (
    Alert,
    AlertRule,
    AlertState,
    Flip,
    Notification,
    Scope,
    Severity,
)
from modelhub.alerts.services import (
    RULE_FIELDS,
    acknowledge,
    create_rule,
    delete_rule,
    silence,
    unsilence,
    update_rule,
)
from modelhub.api.fields import Name, StrictFloat
from modelhub.api.filters import BooleanFilter, ChoiceFilter
from modelhub.api.models import Scope as ApiScope
from modelhub.api.permissions import allowed_model_ids
from modelhub.api.views import BaseViewSet
from modelhub.registry.models import Model
from modelhub.serving.models import InferenceServer

ID_PARAM = OpenApiParameter("id", {"type": "integer", "minimum": 1}, OpenApiParameter.PATH)
# The flips an alert's detail shows, newest first (a flapping alert's history is long).
DETAIL_FLIPS = 50
MAX_SILENCE = timedelta(days=90)


# --- serializers ----------------------------------------------------------------------------


class RuleSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = AlertRule
        fields = ["id", "name", "signal", "series", "scope", "severity"]
        read_only_fields = fields


class NotificationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notification
        fields = ["id", "recipient", "attempt", "status", "error", "created_at", "sent_at", "retry_at"]
        read_only_fields = fields


class FlipSerializer(serializers.ModelSerializer):
    notifications = NotificationSerializer(many=True, read_only=True)

    class Meta:
        model = Flip
        fields = [
            "id",
            "from_state",
            "to_state",
            "reminder",
            "value",
            "message",
            "details",
            "condition_since",
            "created_at",
            "processed",
            "notifications",
        ]
        read_only_fields = fields


class AlertSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:alert-detail")
    rule = RuleSummarySerializer(read_only=True)
    server = serializers.CharField(source="server.name", read_only=True, allow_null=True, default=None)
    model = serializers.CharField(source="model.name", read_only=True, allow_null=True, default=None)
    version = serializers.IntegerField(source="version.number", read_only=True, allow_null=True, default=None)
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", read_only=True, allow_null=True, default=None
    )
    # Empty until the first mail: not one of the state choices, so not described as one.
    notified_state = serializers.CharField(
        read_only=True, help_text="The state recipients were last told of (ok, firing, resolved); empty before any mail"
    )

    class Meta:
        model = Alert
        fields = [
            "id",
            "url",
            "rule",
            "state",
            "target",
            "target_label",
            "server",
            "model",
            "version",
            "deployment",
            "since",
            "bad_since",
            "last_value",
            "last_message",
            "last_details",
            "last_evaluated_at",
            "acknowledged_by",
            "acknowledged_at",
            "silenced_until",
            "notified_state",
            "notified_at",
        ]
        read_only_fields = fields


class AlertDetailSerializer(AlertSerializer):
    flips = FlipSerializer(many=True, read_only=True, source="latest_flips", help_text="Newest first, at most 50")

    class Meta(AlertSerializer.Meta):
        fields = [*AlertSerializer.Meta.fields, "flips"]
        read_only_fields = fields


class SilenceSerializer(serializers.Serializer):
    until = serializers.DateTimeField(required=False, help_text="Silence until then (RFC 3339)")
    minutes = serializers.IntegerField(
        required=False, min_value=1, max_value=int(MAX_SILENCE.total_seconds() // 60), help_text="Or for this long"
    )

    def validate(self, data):
        if ("until" in data) == ("minutes" in data):
            raise serializers.ValidationError({"until": "give either until or minutes, not both and not neither"})
        until = data.get("until") or timezone.now() + timedelta(minutes=data["minutes"])
        if until <= timezone.now():
            raise serializers.ValidationError({"until": f"{until.isoformat()} is not in the future"})
        if until > timezone.now() + MAX_SILENCE:
            raise serializers.ValidationError({"until": f"silence for at most {MAX_SILENCE.days} days"})
        return {"until": until}


class AlertRuleSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:alert-rule-detail")
    threshold = StrictFloat(required=False, allow_null=True, help_text=AlertRule._meta.get_field("threshold").help_text)
    model = Name(
        slug_field="name",
        queryset=Model.objects.all(),
        required=False,
        allow_null=True,
        help_text="The model's name (scope=model)",
    )
    server = Name(
        slug_field="name",
        queryset=InferenceServer.objects.all(),
        required=False,
        allow_null=True,
        help_text="The server's name (scope=server)",
    )
    emails = serializers.ListField(child=serializers.EmailField(), required=False, max_length=100)
    groups = Name(slug_field="name", queryset=Group.objects.all(), many=True, required=False, help_text="Group names")

    class Meta:
        model = AlertRule
        fields = ["id", "url", *RULE_FIELDS, "created_at", "updated_at"]
        read_only_fields = ["id", "url", "created_at", "updated_at"]


# --- filters --------------------------------------------------------------------------------


class AlertFilter(filters.FilterSet):
    state = ChoiceFilter(choices=AlertState.choices)
    severity = ChoiceFilter(field_name="rule__severity", choices=Severity.choices)
    server = filters.CharFilter(field_name="server__name", help_text="Server name")
    model = filters.CharFilter(field_name="model__name", help_text="Model name")

    class Meta:
        model = Alert
        fields = ["state", "severity", "server", "model"]


class AlertRuleFilter(filters.FilterSet):
    scope = ChoiceFilter(choices=Scope.choices)
    model = filters.CharFilter(field_name="model__name", help_text="Model name")
    server = filters.CharFilter(field_name="server__name", help_text="Server name")
    enabled = BooleanFilter()

    class Meta:
        model = AlertRule
        fields = ["scope", "model", "server", "enabled"]


# --- views ----------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List alerts, firing first"),
    retrieve=extend_schema(
        summary="Read an alert with its latest flips and their send attempts",
        responses=AlertDetailSerializer,
        parameters=[ID_PARAM],
    ),
)
class AlertViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BaseViewSet):
    """Alerts: the state of one rule on one server, deployment or version."""

    openapi_tag = "alerts"
    queryset = Alert.objects.all()
    serializer_class = AlertSerializer
    lookup_value_regex = r"[0-9]{1,18}"
    model_path = "model"
    filterset_class = AlertFilter
    ordering_fields = ["since", "id"]
    ordering = ["firing_last", "-since", "-id"]
    action_scopes = {"acknowledge": ApiScope.DEPLOY, "silence": ApiScope.DEPLOY, "unsilence": ApiScope.DEPLOY}

    def get_serializer_class(self):
        return AlertDetailSerializer if self.action == "retrieve" else AlertSerializer

    def get_queryset(self):
        queryset = (
            super()
            .get_queryset()
            .select_related("rule", "server", "model", "version", "acknowledged_by")
            .annotate(
                firing_last=Case(
                    When(state=AlertState.FIRING, then=Value(0)), default=Value(1), output_field=IntegerField()
                )
            )
        )
        if self.action == "retrieve":
            flips = Flip.objects.order_by("-created_at", "-id").prefetch_related(
                Prefetch("notifications", Notification.objects.order_by("id"))
            )
            queryset = queryset.prefetch_related(Prefetch("flips", flips, to_attr="all_flips"))
        return queryset

    def get_object(self):
        alert = super().get_object()
        if hasattr(alert, "all_flips"):
            alert.latest_flips = alert.all_flips[:DETAIL_FLIPS]
        return alert

    def _answer(self, alert: Alert) -> Response:
        return Response(self.render(AlertSerializer, self.get_queryset().get(pk=alert.pk)))

    @extend_schema(
        summary="Acknowledge a firing alert: someone is on it (no reminders until it resolves)",
        request=None,
        responses=AlertSerializer,
        parameters=[ID_PARAM],
    )
    @action(detail=True, methods=["post"], filterset_class=None)
    def acknowledge(self, request, *args, **kwargs):
        return self._answer(acknowledge(self.get_object(), self.actor))

    @extend_schema(
        summary="Silence an alert until a time, or for some minutes: its flips are not mailed meanwhile",
        request=SilenceSerializer,
        responses=AlertSerializer,
        parameters=[ID_PARAM],
    )
    @action(detail=True, methods=["post"], filterset_class=None)
    def silence(self, request, *args, **kwargs):
        alert = self.get_object()
        serializer = SilenceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._answer(silence(alert, serializer.validated_data["until"], self.actor))

    @extend_schema(summary="End an alert's silence", request=None, responses=AlertSerializer, parameters=[ID_PARAM])
    @action(detail=True, methods=["post"], filterset_class=None)
    def unsilence(self, request, *args, **kwargs):
        return self._answer(unsilence(self.get_object(), self.actor))


@extend_schema_view(
    list=extend_schema(summary="List alert rules"),
    retrieve=extend_schema(summary="Read an alert rule", parameters=[ID_PARAM]),
    create=extend_schema(summary="Create an alert rule", responses={201: AlertRuleSerializer}),
    update=extend_schema(summary="Change an alert rule", parameters=[ID_PARAM]),
    partial_update=extend_schema(summary="Change some fields of an alert rule", parameters=[ID_PARAM]),
    destroy=extend_schema(summary="Delete an alert rule with its alerts and their history", parameters=[ID_PARAM]),
)
class AlertRuleViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    BaseViewSet,
):
    """Alert rules: what counts as broken, for how long, how bad, and whom to tell."""

    openapi_tag = "alerts"
    queryset = AlertRule.objects.all()
    serializer_class = AlertRuleSerializer
    lookup_value_regex = r"[0-9]{1,18}"
    model_path = "model"
    filterset_class = AlertRuleFilter
    ordering_fields = ["id", "name", "created_at"]
    ordering = ["id"]
    action_scopes = {
        "create": ApiScope.DEPLOY,
        "update": ApiScope.DEPLOY,
        "partial_update": ApiScope.DEPLOY,
        "destroy": ApiScope.DEPLOY,
    }

    def get_queryset(self):
        return super().get_queryset().select_related("model", "server").prefetch_related("groups")

    def _check_reach(self, data: dict, rule: AlertRule | None = None) -> None:
        """A token restricted to some models writes rules of those models only."""
        ids = allowed_model_ids(self.request)
        if ids is None:
            return
        scope = data.get("scope", rule.scope if rule else Scope.GLOBAL)
        model = data.get("model", rule.model if rule else None)
        names = ", ".join(Model.objects.filter(pk__in=ids).order_by("name").values_list("name", flat=True))
        if scope != Scope.MODEL or model is None:
            raise PermissionDenied(
                f"this API token is restricted to the models {names}: it cannot write {scope} alert rules"
            )
        if model.pk not in ids:
            raise PermissionDenied(
                f"this API token is restricted to the models {names}: it cannot write rules of {model.name!r}"
            )

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self._check_reach(serializer.validated_data)
        rule = create_rule(self.actor, **serializer.validated_data)
        body = self.render(AlertRuleSerializer, self.get_queryset().get(pk=rule.pk))
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": str(body["url"])})

    def update(self, request, *args, partial: bool = False, **kwargs):
        rule = self.get_object()
        serializer = self.get_serializer(rule, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        self._check_reach(serializer.validated_data, rule)
        rule = update_rule(rule, self.actor, **serializer.validated_data)
        return Response(self.render(AlertRuleSerializer, self.get_queryset().get(pk=rule.pk)))

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request, *args, **kwargs):
        delete_rule(self.get_object(), self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)
