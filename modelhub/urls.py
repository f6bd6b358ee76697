from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("modelhub.ops.urls")),
    path("", include("modelhub.api.urls")),
    path("", include("modelhub.ui.urls")),
]
