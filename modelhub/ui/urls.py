from django.urls import path

from modelhub.ui import views

app_name = "ui"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("healthz", views.healthz, name="healthz"),
]
