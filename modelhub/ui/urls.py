"""The operator UI's pages. Names are the contract the templates, alert links and
tests use; every view says the scope it needs (`access.require_scope`)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from modelhub.ui.views import (
    alerts,
    audit,
    canary,
    catalog,
    charts,
    checks,
    deployments,
    drift,
    overview,
    servers,
    tokens,
    versions,
)

app_name = "ui"
urlpatterns = [
    path("", overview.overview, name="overview"),
    path("healthz", overview.healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Models and versions
    path("models/", catalog.model_list, name="model-list"),
    path("models/<str:name>/", catalog.model_detail, name="model-detail"),
    path("models/<str:name>/aliases/<str:alias>/move", catalog.alias_move, name="alias-move"),
    path("models/<str:name>/aliases/promote", catalog.alias_promote, name="alias-promote"),
    path("models/<str:name>/aliases/<str:alias>/rollback", catalog.alias_rollback, name="alias-rollback"),
    path("models/<str:name>/aliases/<str:alias>/canary", catalog.alias_canary, name="alias-canary"),
    path(
        "models/<str:name>/aliases/<str:alias>/canary/promote",
        catalog.alias_canary_promote,
        name="alias-canary-promote",
    ),
    path("models/<str:name>/aliases/<str:alias>/canary/abort", catalog.alias_canary_abort, name="alias-canary-abort"),
    path("models/<str:name>/aliases/<str:alias>/canary/compare/", canary.canary_compare, name="canary-compare"),
    path("models/<str:name>/versions/<int:number>/", versions.version_detail, name="version-detail"),
    path("models/<str:name>/versions/<int:number>/compare/", versions.version_compare, name="version-compare"),
    path("models/<str:name>/versions/<int:number>/artifact", versions.version_artifact, name="version-artifact"),
    path("models/<str:name>/versions/<int:number>/deploy", versions.version_deploy, name="version-deploy"),
    path("models/<str:name>/versions/<int:number>/undeploy", versions.version_undeploy, name="version-undeploy"),
    path("models/<str:name>/versions/<int:number>/accuracy", versions.version_accuracy_run, name="version-accuracy"),
    path(
        "models/<str:name>/versions/<int:number>/accuracy/status",
        versions.version_accuracy_status,
        name="version-accuracy-status",
    ),
    # Deployments: progress of a deploy or undeploy
    path("deployments/<int:pk>/", deployments.deployment_detail, name="deployment-detail"),
    path("deployments/<int:pk>/status", deployments.deployment_status, name="deployment-status"),
    # Servers
    path("servers/", servers.server_list, name="server-list"),
    path("servers/new", servers.server_create, name="server-create"),
    path("servers/<str:name>/", servers.server_detail, name="server-detail"),
    path("servers/<str:name>/edit", servers.server_edit, name="server-edit"),
    path("servers/<str:name>/served", servers.server_served, name="server-served"),
    path("servers/<str:name>/delete", servers.server_delete, name="server-delete"),
    # Alerts and rules
    path("alerts/", alerts.alert_list, name="alert-list"),
    path("alerts/<int:pk>/", alerts.alert_detail, name="alert-detail"),
    path("alerts/<int:pk>/acknowledge", alerts.alert_acknowledge, name="alert-acknowledge"),
    path("alerts/<int:pk>/silence", alerts.alert_silence, name="alert-silence"),
    path("alerts/<int:pk>/unsilence", alerts.alert_unsilence, name="alert-unsilence"),
    path("alerts/rules/", alerts.rule_list, name="rule-list"),
    path("alerts/rules/new", alerts.rule_create, name="rule-create"),
    path("alerts/rules/<int:pk>/", alerts.rule_edit, name="rule-edit"),
    path("alerts/rules/<int:pk>/delete", alerts.rule_delete, name="rule-delete"),
    # Checks
    path("checks/", checks.check_list, name="check-list"),
    path("checks/<int:pk>/", checks.check_detail, name="check-detail"),
    path("checks/run-now", checks.run_now, name="check-run-now"),
    path("checks/schedules/", checks.schedule_list, name="schedule-list"),
    path("checks/schedules/<int:pk>/", checks.schedule_edit, name="schedule-edit"),
    # Audit and tokens
    path("audit/", audit.audit_list, name="audit-list"),
    path("tokens/", tokens.token_list, name="token-list"),
    path("tokens/new", tokens.token_create, name="token-create"),
    path("tokens/<int:pk>/revoke", tokens.token_revoke, name="token-revoke"),
    # Drift: per version, what its sampled inputs and outputs look like against its reference
    path("models/<str:name>/versions/<int:number>/drift/", drift.version_drift, name="version-drift"),
    # Chart data (JSON for Plotly), re-queried by the range selector
    path("charts/<str:chart>", charts.chart_data, name="chart-data"),
]
