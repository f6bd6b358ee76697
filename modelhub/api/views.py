"""The REST API's views: thin layers over the domain functions.

BaseViewSet does the shared work (scopes, the model restriction of tokens,
paging, filtering, ordering, the acting user); each concrete viewset says
what it lists, how it is looked up and which scope each action needs.
"""

import json
import re

from django.db.models import Count, IntegerField, OuterRef, Prefetch, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import Http404, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, UnsupportedMediaType
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from modelhub.api import uploads
from modelhub.api.errors import Conflict, Invalid, error_body
from modelhub.api.filters import (
    AliasMoveFilter,
    AuditFilter,
    CursorPagination,
    DeploymentFilter,
    ModelFilter,
    Pagination,
    ServerFilter,
    StrictOrderingFilter,
    VersionFilter,
)
from modelhub.api.gates import GATE_REFUSAL_RESPONSE, gated_move
from modelhub.api.models import Scope
from modelhub.api.permissions import HasScope, allowed_model_ids, check_before_body, granted_scopes, request_token
from modelhub.api.schema import ErrorSerializer, ModelHubAutoSchema
from modelhub.api.serializers import (
    AliasMoveSerializer,
    AliasPointSerializer,
    AliasSerializer,
    AuditEventSerializer,
    CanarySerializer,
    DeploymentDetailSerializer,
    DeploymentSerializer,
    DeployRequestSerializer,
    DeployResultSerializer,
    ModelSerializer,
    ModelUpdateSerializer,
    ServerSerializer,
    TransitionSerializer,
    UploadSerializer,
    VersionSerializer,
    WhoAmISerializer,
)
from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent, Source
from modelhub.registry.models import Alias, AliasMove, Model, ModelVersion, TensorSpec
from modelhub.registry.services import (
    CanaryConflict,
    abort_canary,
    create_model,
    move_alias,
    promote_canary,
    register_upload,
    set_canary_weight,
    start_canary,
    update_model,
)
from modelhub.serving.models import Deployment, InferenceServer
from modelhub.serving.services import (
    create_server,
    delete_model,
    delete_server,
    delete_version,
    request_deploy,
    request_undeploy,
    servers_with_label,
    update_server,
)

# What a name in a URL may look like; anything else is "not found" without a query.
MODEL_NAME = r"[a-z0-9][a-z0-9_-]{0,99}"
SERVER_NAME = r"[a-z0-9][a-z0-9_.-]{0,99}"
ALIAS_NAME = r"[a-z][a-z0-9_-]{0,49}"
PATH_SEGMENT = r"[^/]{1,200}"  # URL patterns accept more, so that the view can say what is wrong
MAX_NUMBER = 2_147_483_647
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_MANIFEST_DEPTH = 32


def _path_param(name: str, pattern: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(
        name, {"type": "string", "pattern": f"^{pattern}$"}, OpenApiParameter.PATH, description=description
    )


MODEL_PARAM = _path_param("model_name", MODEL_NAME, "The model's name")
NUMBER_PARAM = OpenApiParameter(
    "number",
    {"type": "integer", "minimum": 1, "maximum": MAX_NUMBER},
    OpenApiParameter.PATH,
    description="Version number",
)


class BaseViewSet(viewsets.GenericViewSet):
    permission_classes = [IsAuthenticated, HasScope]
    pagination_class = Pagination
    filter_backends = [DjangoFilterBackend, StrictOrderingFilter]
    # JSON only (the upload is the one multipart exception): form encodings cannot tell
    # 0 from "0" or a list from one string, so they would blur what the schema promises.
    parser_classes = [JSONParser]
    schema = ModelHubAutoSchema()
    # Scope each action needs; reads default to read, other writes to admin.
    action_scopes: dict[str, str] = {}
    # ORM path from this viewset's rows to registry.Model, for tokens restricted to some models
    # (modelhub.api.permissions): without one, such a token may not write here, and reads only
    # when restricted_reads_all says so.
    model_path: str | None = None
    restricted_reads_all = False
    restricted_refused_actions: frozenset[str] = frozenset()
    # A valid lookup value matches this; anything else is 404 without asking the database.
    lookup_pattern = r"[0-9]{1,18}"

    def required_scope(self, request) -> str | None:
        if self.action in self.action_scopes:
            return self.action_scopes[self.action]
        return Scope.READ if request.method in SAFE_METHODS else Scope.ADMIN

    @property
    def actor(self) -> Actor:
        source = Source.API if request_token(self.request) is not None else Source.UI
        return Actor.from_request(self.request, source)

    def restrict(self, queryset, path: str | None):
        ids = allowed_model_ids(self.request)
        if ids is None or path is None:
            return queryset
        return queryset.filter(**{f"{path}__in": ids})

    def get_queryset(self):
        return self.restrict(super().get_queryset(), self.model_path)

    def get_object(self):
        value = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        missing = NotFound(f"{self.queryset.model._meta.verbose_name} {value!r} not found")
        if not re.fullmatch(self.lookup_pattern, value):
            raise missing
        try:
            return super().get_object()
        except Http404:
            raise missing from None

    def render(self, serializer_class, instance, **kwargs) -> dict:
        return serializer_class(instance, context=self.get_serializer_context(), **kwargs).data


class ModelScopedMixin:
    # For viewsets under /models/{model_name}/ (a comment, not a docstring: those become API docs).

    def get_parent_model(self) -> Model:
        if not hasattr(self, "_parent_model"):
            name = self.kwargs["model_name"]
            model = None
            if re.fullmatch(MODEL_NAME, name):
                model = self.restrict(Model.objects.all(), "pk").filter(name=name).first()
            if model is None:
                raise NotFound(f"model {name!r} not found")
            self._parent_model = model
        return self._parent_model


# --- models -----------------------------------------------------------------


def models_with_summary():
    """Models with what a list shows: a constant number of queries for any page."""
    versions = ModelVersion.objects.filter(model=OuterRef("pk")).order_by()
    return Model.objects.annotate(
        latest_version=Subquery(versions.order_by("-number").values("number")[:1]),
        version_count=Coalesce(
            Subquery(versions.values("model").annotate(n=Count("pk")).values("n"), output_field=IntegerField()),
            Value(0),
        ),
    ).prefetch_related(Prefetch("aliases", queryset=Alias.objects.select_related("version").order_by("name")))


@extend_schema_view(
    list=extend_schema(summary="List models"),
    retrieve=extend_schema(summary="Read a model", parameters=[_path_param("name", MODEL_NAME, "The model's name")]),
    create=extend_schema(summary="Create a model", request=ModelSerializer, responses={201: ModelSerializer}),
    update=extend_schema(
        summary="Update a model's description or task kind",
        request=ModelUpdateSerializer,
        responses=ModelSerializer,
        parameters=[_path_param("name", MODEL_NAME, "The model's name")],
    ),
    partial_update=extend_schema(
        summary="Update a model's description or task kind",
        request=ModelUpdateSerializer,
        responses=ModelSerializer,
        parameters=[_path_param("name", MODEL_NAME, "The model's name")],
    ),
    destroy=extend_schema(
        summary="Delete a model, its versions and their files (409 while any version is deployed)",
        parameters=[_path_param("name", MODEL_NAME, "The model's name")],
    ),
)
class ModelViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    BaseViewSet,
):
    """Registered models. A model's name is its name on Triton."""

    openapi_tag = "models"
    queryset = Model.objects.all()
    serializer_class = ModelSerializer
    lookup_field = "name"
    lookup_value_regex = PATH_SEGMENT
    lookup_pattern = MODEL_NAME
    model_path = "pk"
    filterset_class = ModelFilter
    ordering_fields = ["name", "created_at", "updated_at", "latest_version", "version_count"]
    ordering = ["name"]
    action_scopes = {"create": Scope.UPLOAD, "update": Scope.UPLOAD, "partial_update": Scope.UPLOAD}
    # A new model is under none of a restricted token's models.
    restricted_refused_actions = frozenset({"create"})

    def get_queryset(self):
        return self.restrict(models_with_summary(), self.model_path)

    def create(self, request, *args, **kwargs):
        serializer = ModelSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        model = create_model(self.actor, **serializer.validated_data)
        url = serializer.get_url(model)
        return Response(
            self.render(ModelSerializer, self.get_queryset().get(pk=model.pk)), status=201, headers={"Location": url}
        )

    def update(self, request, *args, partial: bool = False, **kwargs):
        model = self.get_object()
        serializer = ModelUpdateSerializer(model, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        update_model(model, self.actor, **serializer.validated_data)
        return Response(self.render(ModelSerializer, self.get_queryset().get(pk=model.pk)))

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request, *args, **kwargs):
        delete_model(self.get_object(), self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- versions, upload, deploy -----------------------------------------------


def _check_json(value, depth: int = 0) -> str | None:
    """A problem that would stop Postgres' jsonb or Python's json from storing `value`."""
    if depth > MAX_MANIFEST_DEPTH:
        return f"is nested deeper than {MAX_MANIFEST_DEPTH} levels"
    if isinstance(value, str):
        return "holds a NUL character, which cannot be stored" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _check_json(key, depth + 1) or _check_json(item, depth + 1)
            if problem:
                return problem
    if isinstance(value, list):
        for item in value:
            problem = _check_json(item, depth + 1)
            if problem:
                return problem
    return None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_manifest(request) -> dict:
    """The manifest form field (text, or a file part) as a JSON object; {} when absent."""
    raw = request.FILES.get("manifest")
    if raw is not None:
        data = raw.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise Invalid({"manifest": f"is larger than {MAX_MANIFEST_BYTES} bytes"})
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid({"manifest": "is not UTF-8 text"}) from None
    else:
        text = request.POST.get("manifest", "")
    if not text.strip():
        return {}
    try:
        manifest = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise Invalid({"manifest": f"is not valid JSON: {exc}"}) from None
    problem = _check_json(manifest)
    if problem:
        raise Invalid({"manifest": problem})
    return manifest


def _version_queryset():
    return ModelVersion.objects.select_related("model", "created_by").prefetch_related(
        Prefetch("tensors", queryset=TensorSpec.objects.order_by("direction", "position")),
        Prefetch("aliases", queryset=Alias.objects.order_by("name")),
    )


def _resolve_servers(data: dict, *, deploying: bool) -> list[InferenceServer]:
    if data.get("server"):
        name = data["server"]
        server = InferenceServer.objects.filter(name=name).first() if re.fullmatch(SERVER_NAME, name) else None
        if server is None:
            raise Invalid({"server": f"unknown server {name!r}"})
        if deploying and not server.enabled:
            raise Invalid({"server": f"server {name!r} is disabled"})
        return [server]
    label = data["label"]
    servers = servers_with_label(label, enabled_only=deploying)
    if not servers:
        raise Invalid({"label": f"no {'enabled ' if deploying else ''}server has the label {label!r}"})
    return servers


@extend_schema_view(
    list=extend_schema(summary="List a model's versions", parameters=[MODEL_PARAM]),
    retrieve=extend_schema(summary="Read a version", parameters=[MODEL_PARAM, NUMBER_PARAM]),
    destroy=extend_schema(
        summary="Delete a version and its file (409 while it is deployed or an alias points at it)",
        parameters=[MODEL_PARAM, NUMBER_PARAM],
    ),
)
class VersionViewSet(ModelScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, BaseViewSet):
    """Versions of a model: upload, read, deploy and undeploy."""

    openapi_tag = "versions"
    queryset = ModelVersion.objects.all()
    serializer_class = VersionSerializer
    lookup_field = "number"
    lookup_value_regex = r"[0-9]{1,18}"
    lookup_pattern = r"[0-9]{1,9}"
    model_path = "model"
    filterset_class = VersionFilter
    ordering_fields = ["number", "created_at", "size"]
    ordering = ["-number"]
    action_scopes = {"create": Scope.UPLOAD, "deploy": Scope.DEPLOY, "undeploy": Scope.DEPLOY}

    def initialize_request(self, request, *args, **kwargs):
        request = super().initialize_request(request, *args, **kwargs)
        if self.action == "create":
            request.parsers = [MultiPartParser()]
        return request

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ModelVersion.objects.none()
        return _version_queryset().filter(model=self.get_parent_model())

    def initial(self, request, *args, **kwargs):
        if self.action == "create":
            # A caller who may not upload is refused before a byte of the body reaches the disk.
            check_before_body(self, request)
            # Before authentication: session auth reads the form for its CSRF check.
            self.upload_handler = uploads.install(request)
        super().initial(request, *args, **kwargs)

    @extend_schema(
        summary="Upload a new version",
        description=(
            "Multipart upload of the artifact (a Triton model folder as .zip/.tar.gz/.tar, or a bare "
            "model.onnx) and its manifest. The same bytes uploaded again answer 200 with the existing "
            "version. A model that does not exist yet is created when the caller may upload and the "
            "token is not restricted to some models."
        ),
        parameters=[MODEL_PARAM],
        request={"multipart/form-data": UploadSerializer},
        responses={
            201: OpenApiResponse(VersionSerializer, description="Registered a new version"),
            200: OpenApiResponse(VersionSerializer, description="These bytes were registered before: that version"),
        },
    )
    def create(self, request, *args, **kwargs):
        try:
            return self._upload(request)
        finally:
            self.upload_handler.discard()  # the temporary files, whatever happened

    def _upload(self, request) -> Response:
        uploads.check_content_length(request)
        if not (request.content_type or "").startswith("multipart/form-data"):
            raise UnsupportedMediaType(
                request.content_type, "upload as multipart/form-data with the fields artifact and manifest"
            )
        name = self.kwargs["model_name"]
        restricted = allowed_model_ids(request) is not None
        if restricted:
            self.get_parent_model()  # 404 outside the token's models
        elif not re.fullmatch(MODEL_NAME, name):
            raise Invalid(
                {"model_name": "use 1-100 lowercase letters, digits, '-' or '_', starting with a letter or digit"}
            )
        artifact = request.FILES.get("artifact")  # reading FILES streams the body through the handler
        if artifact is None:
            raise Invalid({"artifact": "required: the model archive or model.onnx, sent as a file part"})
        if artifact.size == 0:
            raise Invalid({"artifact": "the uploaded file is empty"})
        manifest = read_manifest(request)
        registration = register_upload(
            name,
            artifact.temporary_file_path(),
            manifest,
            self.actor,
            create=not restricted,
            sha256=getattr(artifact, "sha256", None),
            size=artifact.size,
            consume=True,  # the temporary file is moved into storage, not copied
        )
        version = _version_queryset().get(pk=registration.version.pk)
        body = self.render(VersionSerializer, version)
        if not registration.created:
            return Response(body, status=status.HTTP_200_OK)
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})

    def _set_desired(self, request, change, *, deploying: bool) -> Response:
        version = self.get_object()
        serializer = DeployRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        servers = _resolve_servers(serializer.validated_data, deploying=deploying)
        deployments = change(version, servers, self.actor)
        # Read back: with an eager task queue the reconciler has already run.
        fresh = Deployment.objects.select_related("version__model", "server").filter(pk__in=[d.pk for d in deployments])
        return Response(self.render(DeployResultSerializer, {"deployments": fresh}), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Deploy this version to a server, or to every enabled server with a label",
        parameters=[MODEL_PARAM, NUMBER_PARAM],
        request=DeployRequestSerializer,
        responses={202: DeployResultSerializer},
    )
    @action(detail=True, methods=["post"])
    def deploy(self, request, *args, **kwargs):
        return self._set_desired(request, request_deploy, deploying=True)

    @extend_schema(
        summary="Undeploy this version from a server, or from every server with a label",
        parameters=[MODEL_PARAM, NUMBER_PARAM],
        request=DeployRequestSerializer,
        responses={202: DeployResultSerializer},
    )
    @action(detail=True, methods=["post"])
    def undeploy(self, request, *args, **kwargs):
        return self._set_desired(request, request_undeploy, deploying=False)

    def destroy(self, request, *args, **kwargs):
        delete_version(self.get_object(), self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- aliases ----------------------------------------------------------------

ALIAS_PARAM = _path_param("alias", ALIAS_NAME, "e.g. production, staging")
CANARY_CONFLICT = OpenApiResponse(
    ErrorSerializer,
    description="The alias's canary state does not allow this: no canary running (promote, abort), or another "
    "version's canary running (start: promote or abort it first)",
)


@extend_schema_view(
    list=extend_schema(summary="List a model's aliases", parameters=[MODEL_PARAM]),
    retrieve=extend_schema(summary="Read an alias", parameters=[MODEL_PARAM, ALIAS_PARAM]),
    update=extend_schema(
        summary="Point an alias at a version (promote, or roll back); with gate=true only past the promotion gates",
        parameters=[MODEL_PARAM, ALIAS_PARAM],
        request=AliasPointSerializer,
        responses={200: AliasSerializer, 409: GATE_REFUSAL_RESPONSE},
    ),
    destroy=extend_schema(summary="Drop an alias", parameters=[MODEL_PARAM, ALIAS_PARAM]),
)
class AliasViewSet(ModelScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, BaseViewSet):
    """Aliases (production, staging, …): movable names for versions of a model."""

    openapi_tag = "aliases"
    queryset = Alias.objects.all()
    serializer_class = AliasSerializer
    lookup_field = "name"
    lookup_url_kwarg = "alias"
    lookup_value_regex = PATH_SEGMENT
    lookup_pattern = ALIAS_NAME
    model_path = "model"
    filterset_fields = ["name"]
    ordering_fields = ["name", "updated_at"]
    ordering = ["name"]
    action_scopes = {
        "update": Scope.DEPLOY,
        "destroy": Scope.DEPLOY,
        "canary": Scope.DEPLOY,
        "canary_promote": Scope.DEPLOY,
        "canary_abort": Scope.DEPLOY,
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Alias.objects.none()
        return Alias.objects.select_related("model", "version", "canary_version").filter(model=self.get_parent_model())

    def update(self, request, *args, **kwargs):
        model = self.get_parent_model()
        name = self.kwargs["alias"]
        if not re.fullmatch(ALIAS_NAME, name):
            raise Invalid({"alias": "use 1-50 lowercase letters, digits, '-' or '_', starting with a letter"})
        serializer = AliasPointSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        number = serializer.validated_data["version"]
        version = model.versions.filter(number=number).first()
        if version is None:
            raise Invalid({"version": f"model {model.name!r} has no version {number}"})
        if serializer.validated_data["gate"]:
            return gated_move(self, model, name, version)
        alias = move_alias(model, name, version, self.actor)
        return Response(self.render(AliasSerializer, alias))

    def destroy(self, request, *args, **kwargs):
        alias = self.get_object()
        move_alias(alias.model, alias.name, None, self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Start a weighted canary on this alias, or change the running canary's weight",
        description="`weight` percent of the traffic for the model without a version goes to `version`, the rest "
        "to the alias's own version. Sending the running canary's version changes its weight.",
        parameters=[MODEL_PARAM, ALIAS_PARAM],
        request=CanarySerializer,
        responses={200: AliasSerializer, 409: CANARY_CONFLICT},
    )
    @action(detail=True, methods=["put"], url_path="canary")
    def canary(self, request, *args, **kwargs):
        alias = self.get_object()
        serializer = CanarySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        number, weight = serializer.validated_data["version"], serializer.validated_data["weight"]
        if alias.canary_version is not None and alias.canary_version.number == number:
            return self._canary_answer(set_canary_weight, weight)
        version = alias.model.versions.filter(number=number).first()
        if version is None:
            raise Invalid({"version": f"model {alias.model.name!r} has no version {number}"})
        return self._canary_answer(start_canary, version, weight)

    @extend_schema(
        summary="Promote the canary: the alias moves to it (an alias move, as any) and the canary ends",
        parameters=[MODEL_PARAM, ALIAS_PARAM],
        request=None,
        responses={200: AliasSerializer, 409: CANARY_CONFLICT},
    )
    @action(detail=True, methods=["post"], url_path="canary/promote")
    def canary_promote(self, request, *args, **kwargs):
        self.get_object()
        return self._canary_answer(promote_canary)

    @extend_schema(
        summary="Abort the canary: all the alias's traffic goes back to its version",
        parameters=[MODEL_PARAM, ALIAS_PARAM],
        request=None,
        responses={200: AliasSerializer, 409: CANARY_CONFLICT},
    )
    @action(detail=True, methods=["post"], url_path="canary/abort")
    def canary_abort(self, request, *args, **kwargs):
        self.get_object()
        return self._canary_answer(abort_canary)

    def _canary_answer(self, transition, *args) -> Response:
        try:
            alias = transition(self.get_parent_model(), self.kwargs["alias"], *args, actor=self.actor)
        except CanaryConflict as conflict:
            raise Conflict(str(conflict)) from None
        fresh = self.get_queryset().get(pk=alias.pk)
        return Response(self.render(AliasSerializer, fresh))


@extend_schema_view(
    list=extend_schema(summary="Every move of a model's aliases, newest first", parameters=[MODEL_PARAM])
)
class AliasMoveViewSet(ModelScopedMixin, mixins.ListModelMixin, BaseViewSet):
    """Every move of a model's aliases: rolling back is moving an alias back."""

    openapi_tag = "aliases"
    queryset = AliasMove.objects.all()
    serializer_class = AliasMoveSerializer
    model_path = "model"
    filterset_class = AliasMoveFilter
    ordering_fields = ["created_at", "id"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AliasMove.objects.none()
        return AliasMove.objects.select_related("from_version", "to_version").filter(model=self.get_parent_model())


# --- serving ------------------------------------------------------------------

SERVER_PARAM = _path_param("name", SERVER_NAME, "The server's name")


@extend_schema_view(
    list=extend_schema(summary="List deployments"),
    retrieve=extend_schema(
        summary="Read a deployment: desired and observed state, Triton's last error, transitions",
        responses=DeploymentDetailSerializer,
        parameters=[OpenApiParameter("id", {"type": "integer", "minimum": 1}, OpenApiParameter.PATH)],
    ),
)
class DeploymentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BaseViewSet):
    """Deployments: which version should be (desired) and is (observed) loaded on which server."""

    openapi_tag = "deployments"
    queryset = Deployment.objects.select_related("version__model", "server")
    serializer_class = DeploymentSerializer
    lookup_value_regex = r"[0-9]{1,18}"
    model_path = "version__model"
    filterset_class = DeploymentFilter
    ordering_fields = ["id", "desired_at", "observed_at", "created_at", "desired", "observed"]
    ordering = ["-id"]

    def get_serializer_class(self):
        return {"retrieve": DeploymentDetailSerializer, "transitions": TransitionSerializer}.get(
            self.action, DeploymentSerializer
        )

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "retrieve":
            latest = Prefetch(
                "transitions", DeploymentDetailSerializer.latest_transitions(), to_attr="latest_transitions"
            )
            queryset = queryset.annotate(transition_count=Count("transitions")).prefetch_related(latest)
        return queryset

    @extend_schema(
        summary="A deployment's observed-state changes, newest first, paged by cursor",
        parameters=[OpenApiParameter("id", {"type": "integer", "minimum": 1}, OpenApiParameter.PATH)],
        responses=TransitionSerializer(many=True),
    )
    @action(
        detail=True,
        pagination_class=CursorPagination,
        filterset_class=None,
        ordering_fields=["created_at", "id"],
        ordering=["-created_at", "-id"],
    )
    def transitions(self, request, *args, **kwargs):
        deployment = self.get_object()
        page = self.paginate_queryset(self.filter_queryset(deployment.transitions.all()))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


@extend_schema_view(
    list=extend_schema(summary="List Triton servers"),
    retrieve=extend_schema(summary="Read a server", parameters=[SERVER_PARAM]),
    create=extend_schema(summary="Register a Triton server", responses={201: ServerSerializer}),
    update=extend_schema(summary="Update a server", parameters=[SERVER_PARAM]),
    partial_update=extend_schema(summary="Update a server", parameters=[SERVER_PARAM]),
    destroy=extend_schema(
        summary="Forget a server and its undeployed deployments (409 while anything is meant to be loaded on it)",
        parameters=[SERVER_PARAM],
    ),
)
class ServerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BaseViewSet):
    """Triton servers ModelHub manages."""

    openapi_tag = "servers"
    queryset = InferenceServer.objects.all()
    serializer_class = ServerSerializer
    lookup_field = "name"
    lookup_value_regex = PATH_SEGMENT
    lookup_pattern = SERVER_NAME
    # A token restricted to some models reads every server (a deploy names one) and writes none:
    # pointing a shared server elsewhere would send other teams' models there.
    restricted_reads_all = True
    filterset_class = ServerFilter
    ordering_fields = ["name", "created_at", "last_seen_at"]
    ordering = ["name"]

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        server = create_server(self.actor, **serializer.validated_data)
        body = self.render(ServerSerializer, server)
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})

    def update(self, request, *args, partial: bool = False, **kwargs):
        server = self.get_object()
        serializer = self.get_serializer(server, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        server = update_server(server, self.actor, **serializer.validated_data)
        return Response(self.render(ServerSerializer, server))

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request, *args, **kwargs):
        delete_server(self.get_object(), self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- audit and identity -------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="The audit log: every write, who made it, from where"),
    retrieve=extend_schema(
        summary="Read an audit event",
        parameters=[OpenApiParameter("id", {"type": "integer", "minimum": 1}, OpenApiParameter.PATH)],
    ),
)
class AuditViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BaseViewSet):
    """The audit log: every write, who made it (user or token) and from where."""

    openapi_tag = "audit"
    queryset = AuditEvent.objects.select_related("user")
    serializer_class = AuditEventSerializer
    lookup_value_regex = r"[0-9]{1,18}"
    model_path = "model_id"
    filterset_class = AuditFilter
    # Paged by cursor (no COUNT over the ever-growing log), which follows these orders only.
    pagination_class = CursorPagination
    ordering_fields = ["created_at", "id"]
    ordering = ["-created_at", "-id"]

    def restrict(self, queryset, path: str | None):
        # A token restricted to some models reads their events only (servers', tokens' and
        # other models' are hidden); loads on a server know their model by name only.
        ids = allowed_model_ids(self.request)
        if ids is None:
            return queryset
        return queryset.about_models(ids, Model.objects.filter(pk__in=ids).values("name"))


class WhoAmIView(APIView):
    """Who the caller is and what it may do: a quick check of a CI token."""

    permission_classes = [IsAuthenticated]
    schema = ModelHubAutoSchema()
    openapi_tag = "identity"

    @extend_schema(summary="Who am I, and what may I do", responses=WhoAmISerializer)
    def get(self, request):
        token = request_token(request)
        return Response(
            WhoAmISerializer(
                {
                    "user": request.user.get_username(),
                    "scopes": sorted(granted_scopes(request)),
                    "token": token,
                }
            ).data
        )


@csrf_exempt
def api_not_found(request, *args, **kwargs):
    """Unknown URLs under /api/ answer in the API's error shape, not an HTML page."""
    message = f"no API endpoint at {request.path}"
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            message += f" (API URLs end with a slash: {request.path}/)"
    return JsonResponse(error_body(message, "not_found"), status=404)
