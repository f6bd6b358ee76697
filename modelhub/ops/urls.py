from django.urls import path

from modelhub.ops import views

app_name = "ops"
urlpatterns = [
    path("healthz/live", views.live, name="live"),
    path("healthz/ready", views.ready, name="ready"),
    path("metrics", views.prometheus, name="metrics"),
]
