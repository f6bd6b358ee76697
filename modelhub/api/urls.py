from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from modelhub.api import (
    alerts_views,
    discovery_views,
    drift_views,
    evaluation_views,
    monitoring_views,
    run_now_views,
    views,
)

app_name = "api"

router = SimpleRouter()
router.register("models", views.ModelViewSet, basename="model")
router.register(rf"models/(?P<model_name>{views.PATH_SEGMENT})/versions", views.VersionViewSet, basename="version")
router.register(rf"models/(?P<model_name>{views.PATH_SEGMENT})/aliases", views.AliasViewSet, basename="alias")
router.register(
    rf"models/(?P<model_name>{views.PATH_SEGMENT})/alias-history", views.AliasMoveViewSet, basename="alias-move"
)
router.register("deployments", views.DeploymentViewSet, basename="deployment")
router.register("servers", views.ServerViewSet, basename="server")
router.register("server-groups", discovery_views.ServerGroupViewSet, basename="server-group")
router.register("audit", views.AuditViewSet, basename="audit")
router.register("alerts", alerts_views.AlertViewSet, basename="alert")
router.register("alert-rules", alerts_views.AlertRuleViewSet, basename="alert-rule")
router.register("check-results", monitoring_views.CheckResultViewSet, basename="check-result")

urlpatterns = [
    path("api/v1/", include(router.urls)),
    path("api/v1/whoami/", views.WhoAmIView.as_view(), name="whoami"),
    path("api/v1/series/", monitoring_views.SeriesView.as_view(), name="series"),
    path("api/v1/series/available/", monitoring_views.SeriesAvailableView.as_view(), name="series-available"),
    re_path(
        r"^api/v1/deployments/(?P<pk>[0-9]{1,18})/check/$",
        run_now_views.DeploymentCheckViewSet.as_view({"post": "check"}),
        name="deployment-check",
    ),
    re_path(
        rf"^api/v1/servers/(?P<name>{views.PATH_SEGMENT})/check/$",
        run_now_views.ServerCheckViewSet.as_view({"post": "check"}),
        name="server-check",
    ),
    re_path(
        rf"^api/v1/models/(?P<model_name>{views.PATH_SEGMENT})/evaluation-set/$",
        evaluation_views.EvaluationSetViewSet.as_view({"get": "retrieve", "put": "update", "delete": "destroy"}),
        name="evaluation-set",
    ),
    re_path(
        rf"^api/v1/models/(?P<model_name>{views.PATH_SEGMENT})/versions/(?P<number>{views.PATH_SEGMENT})/accuracy/$",
        evaluation_views.AccuracyViewSet.as_view({"get": "list", "post": "create"}),
        name="version-accuracy",
    ),
    re_path(
        rf"^api/v1/models/(?P<model_name>{views.PATH_SEGMENT})/versions/(?P<number>{views.PATH_SEGMENT})/predictions/$",
        drift_views.PredictionLogViewSet.as_view({"post": "create"}),
        name="version-predictions",
    ),
    re_path(
        rf"^api/v1/models/(?P<model_name>{views.PATH_SEGMENT})/versions/(?P<number>{views.PATH_SEGMENT})/reference/$",
        drift_views.ReferenceViewSet.as_view({"put": "update"}),
        name="version-reference",
    ),
    re_path(
        rf"^api/v1/models/(?P<model_name>{views.PATH_SEGMENT})/labels/$",
        drift_views.LabelViewSet.as_view({"post": "create"}),
        name="model-labels",
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path(
        "api/redoc/", SpectacularRedocView.as_view(url_name="api:schema", template_name="api/redoc.html"), name="redoc"
    ),
    # Last: anything else under /api/ is a JSON 404, not Django's HTML page.
    re_path(r"^api/", views.api_not_found),
]
