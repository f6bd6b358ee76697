"""Server groups: a DNS name standing for several Triton servers (modelhub.serving.discovery).

`/api/v1/server-groups/`: the same rules as servers. Everyone with read may list and
read them (a token restricted to some models too: they belong to no model); writing
needs admin, and a restricted token never writes them. A new or changed group is
resolved as soon as the write commits; its servers then appear under /servers/.
"""

from django.db.models import Prefetch
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.response import Response

from modelhub.api.fields import StrictBoolean, StrictInteger, Text
from modelhub.api.filters import BooleanFilter
from modelhub.api.serializers import _link
from modelhub.api.views import PATH_SEGMENT, BaseViewSet, _path_param
from modelhub.serving.discovery import create_group, delete_group, update_group
from modelhub.serving.models import InferenceServer, ServerGroup, dns_name_validator, group_name_validator

GROUP_NAME = r"[a-z0-9][a-z0-9_.-]{0,49}"
GROUP_PARAM = _path_param("name", GROUP_NAME, "The group's name")


class GroupMemberSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = InferenceServer
        fields = ["name", "url", "address", "live", "drained_at"]
        read_only_fields = fields

    def get_url(self, obj: InferenceServer) -> str:
        return _link(self, "api:server-detail", name=obj.name)


class ServerGroupSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    name = Text(max_length=50, validators=[group_name_validator])
    dns_name = Text(
        max_length=253,
        validators=[dns_name_validator],
        help_text="A name resolving to one address per Triton server, e.g. a Kubernetes headless service "
        "triton.models.svc.cluster.local",
    )
    scheme = serializers.ChoiceField(choices=["http", "https"], default="http")
    port = StrictInteger(min_value=1, max_value=65535, default=8000, help_text="Triton's HTTP port")
    metrics_port = StrictInteger(
        min_value=1, max_value=65535, allow_null=True, default=None, help_text="Triton's metrics port; null = none"
    )
    labels = serializers.ListField(
        child=Text(max_length=100), max_length=50, default=list, help_text="Given to every server of the group"
    )
    backends = serializers.ListField(
        child=Text(max_length=100), max_length=50, default=list, help_text="Given to every server of the group"
    )
    enabled = StrictBoolean(default=True, help_text="false: the name is not resolved; servers stay as they are")
    interval_s = StrictInteger(
        min_value=5, max_value=24 * 3600, default=30, help_text="How often the name is resolved again (seconds)"
    )
    addresses = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="What the name resolved to last"
    )
    servers = GroupMemberSerializer(
        many=True, read_only=True, help_text="One per address ever resolved; drained_at set while it is gone"
    )

    class Meta:
        model = ServerGroup
        fields = [
            "url",
            "name",
            "dns_name",
            "scheme",
            "port",
            "metrics_port",
            "labels",
            "backends",
            "enabled",
            "interval_s",
            "addresses",
            "last_resolved_at",
            "last_error",
            "servers",
            "created_at",
        ]
        read_only_fields = ["last_resolved_at", "last_error", "created_at"]

    def get_url(self, obj: ServerGroup) -> str:
        return _link(self, "api:server-group-detail", name=obj.name)


class ServerGroupFilter(filters.FilterSet):
    enabled = BooleanFilter()

    class Meta:
        model = ServerGroup
        fields = ["enabled"]


@extend_schema_view(
    list=extend_schema(summary="List server groups (DNS names standing for several Triton servers)"),
    retrieve=extend_schema(summary="Read a server group and its servers", parameters=[GROUP_PARAM]),
    create=extend_schema(
        summary="Register a DNS name whose addresses become servers", responses={201: ServerGroupSerializer}
    ),
    update=extend_schema(summary="Update a server group (its servers follow)", parameters=[GROUP_PARAM]),
    partial_update=extend_schema(summary="Update a server group (its servers follow)", parameters=[GROUP_PARAM]),
    destroy=extend_schema(
        summary="Forget a server group (409 while it has servers)",
        parameters=[GROUP_PARAM],
    ),
)
class ServerGroupViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BaseViewSet):
    """DNS names whose addresses ModelHub keeps as servers, one per address."""

    openapi_tag = "servers"
    serializer_class = ServerGroupSerializer
    queryset = ServerGroup.objects.prefetch_related(
        Prefetch("servers", queryset=InferenceServer.objects.order_by("name"))
    )
    lookup_field = "name"
    lookup_value_regex = PATH_SEGMENT
    lookup_pattern = GROUP_NAME
    # As servers: a token restricted to some models reads every group and writes none.
    restricted_reads_all = True
    filterset_class = ServerGroupFilter
    ordering_fields = ["name", "created_at", "last_resolved_at"]
    ordering = ["name"]

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        group = create_group(self.actor, **serializer.validated_data)
        body = self.render(ServerGroupSerializer, self.get_queryset().get(pk=group.pk))
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})

    def update(self, request, *args, partial: bool = False, **kwargs):
        group = self.get_object()
        serializer = self.get_serializer(group, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        group = update_group(group, self.actor, **serializer.validated_data)
        return Response(self.render(ServerGroupSerializer, self.get_queryset().get(pk=group.pk)))

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request, *args, **kwargs):
        delete_group(self.get_object(), self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)
