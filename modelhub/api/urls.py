from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from modelhub.api import views

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
router.register("audit", views.AuditViewSet, basename="audit")

urlpatterns = [
    path("api/v1/", include(router.urls)),
    path("api/v1/whoami/", views.WhoAmIView.as_view(), name="whoami"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path(
        "api/redoc/", SpectacularRedocView.as_view(url_name="api:schema", template_name="api/redoc.html"), name="redoc"
    ),
    # Last: anything else under /api/ is a JSON 404, not Django's HTML page.
    re_path(r"^api/", views.api_not_found),
]
