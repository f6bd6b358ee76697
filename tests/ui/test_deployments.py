"""A deployment's page and its status fragment: what a deploy or undeploy shows while it
runs and once it ends (loaded, or Triton's error), for each role; and, against a real
Triton, a deploy from the UI that loads and one whose load fails."""

import html

import pytest
from django.urls import reverse
from django.utils import timezone

from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent, Source
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.registry.services import register_upload
from modelhub.serving.models import Deployment, DeploymentTransition, DesiredState, InferenceServer, ObservedState
from tests.conftest import BROKEN_MODEL_PY, DOUBLER_MANIFEST, doubler_source, make_zip

TRITON_ERROR = "failed to load 'digits' version 1: Internal: SyntaxError: invalid syntax (model.py, line 1)"


def make_deployment(tmp_path, source: str = doubler_source(2), server_url: str = "http://127.0.0.1:9", **fields):
    artifact = make_zip(tmp_path / "v.zip", {"1/model.py": source})
    version = register_upload("digits", artifact, DOUBLER_MANIFEST, Actor(source=Source.CLI), create=True).version
    server = InferenceServer.objects.create(name="srv", base_url=server_url)
    return Deployment.objects.create(version=version, server=server, **fields)


def observed(deployment: Deployment, state: str, error: str = "", **fields) -> Deployment:
    """What the reconciler records after looking (tests write it directly: no Triton here)."""
    now = timezone.now()
    Deployment.objects.filter(pk=deployment.pk).update(
        observed=state, last_error=error, observed_at=now, checked_at=now, **fields
    )
    deployment.refresh_from_db()
    return deployment


def detail(deployment) -> str:
    return reverse("ui:deployment-detail", args=[deployment.pk])


def status(deployment) -> str:
    return reverse("ui:deployment-status", args=[deployment.pk])


# --- page and fragment, no Triton --------------------------------------------------------


@pytest.mark.django_db
class TestPages:
    def test_viewer_sees_links_states_error_charts_and_no_buttons(self, client_as, tmp_path):
        deployment = observed(make_deployment(tmp_path), ObservedState.FAILED, TRITON_ERROR, retry_at=timezone.now())
        DeploymentTransition.objects.create(deployment=deployment, from_state="pending", to_state="failed")
        CheckResult.objects.create(
            kind=CheckKind.MODEL_READY, status=Status.FAIL, deployment=deployment, message="not ready"
        )

        page = html.unescape(client_as("viewer").get(detail(deployment)).content.decode())

        assert reverse("ui:model-detail", args=["digits"]) in page
        assert reverse("ui:version-detail", args=["digits", 1]) in page
        assert reverse("ui:server-detail", args=["srv"]) in page
        assert f'<pre class="triton-error" data-testid="triton-error">{TRITON_ERROR}</pre>' in page
        assert "the next try is after" in page
        assert f'data-refresh-url="{status(deployment)}" data-refresh-every="1"' in page
        assert 'data-testid="transitions"' in page and "not ready" in page
        assert f"deployment:{deployment.pk}" in page
        assert 'data-testid="undeploy-srv"' not in page and 'data-testid="redeploy"' not in page

    def test_operator_sees_undeploy_and_redeploy(self, client_as, tmp_path):
        deployment = make_deployment(tmp_path)
        page = client_as("operator").get(detail(deployment)).content.decode()
        assert 'data-testid="undeploy-srv"' in page and 'data-testid="redeploy"' in page
        assert reverse("ui:version-undeploy", args=["digits", 1]) in page

    def test_anonymous_goes_to_login_no_role_is_refused_unknown_is_404(self, client_as, client, tmp_path):
        deployment = make_deployment(tmp_path)
        for url in (detail(deployment), status(deployment)):
            assert client.get(url)["Location"].startswith(reverse("ui:login"))
            assert client_as(None).get(url).status_code == 403
        assert client_as("viewer").get(reverse("ui:deployment-detail", args=[deployment.pk + 1])).status_code == 404

    def test_transitions_page_by_cursor_fifty_at_a_time(self, client_as, tmp_path):
        deployment = make_deployment(tmp_path)
        DeploymentTransition.objects.bulk_create(
            DeploymentTransition(deployment=deployment, from_state="pending", to_state="failed", error=f"try {n}")
            for n in range(55)
        )
        viewer = client_as("viewer")
        first = viewer.get(detail(deployment)).content.decode()
        assert "try 54" in first and "try 5<" in first and "try 4<" not in first
        older = first.split('href="?before=')[1].split('"')[0]
        second = viewer.get(detail(deployment), {"before": older}).content.decode()
        assert "try 4<" in second and "try 0<" in second and "try 5<" not in second
        assert "?before=" not in second

    def test_status_is_not_final_until_the_reconciler_has_looked(self, client_as, tmp_path):
        deployment = make_deployment(tmp_path)
        fragment = client_as("viewer").get(status(deployment)).content.decode()
        assert "<html" not in fragment
        assert 'data-testid="deployment-state" data-state="pending"' in fragment
        assert "data-final" not in fragment and "loading on srv" in fragment

    def test_status_is_final_once_loaded(self, client_as, tmp_path):
        deployment = observed(make_deployment(tmp_path), ObservedState.LOADED)
        fragment = client_as("viewer").get(status(deployment)).content.decode()
        assert "data-final" in fragment and 'data-state="loaded"' in fragment and "Loaded on srv." in fragment

    def test_status_is_final_with_tritons_error_once_failed(self, client_as, tmp_path):
        deployment = observed(make_deployment(tmp_path), ObservedState.FAILED, TRITON_ERROR)
        fragment = html.unescape(client_as("viewer").get(status(deployment)).content.decode())
        assert "data-final" in fragment and 'data-state="failed"' in fragment and TRITON_ERROR in fragment

    def test_a_new_request_after_an_outcome_is_pending_again(self, client_as, tmp_path):
        deployment = observed(make_deployment(tmp_path), ObservedState.FAILED, TRITON_ERROR)
        Deployment.objects.filter(pk=deployment.pk).update(desired_at=timezone.now())  # "deploy again"
        fragment = client_as("viewer").get(status(deployment)).content.decode()
        assert "data-final" not in fragment


# --- against a real Triton -----------------------------------------------------------------


def deploy_from_the_ui(client, tmp_path, triton, source: str) -> Deployment:
    artifact = make_zip(tmp_path / "v.zip", {"1/model.py": source})
    version = register_upload("digits", artifact, DOUBLER_MANIFEST, Actor(source=Source.CLI), create=True).version
    InferenceServer.objects.create(name="local", base_url=triton.http_url, metrics_url=triton.metrics_url)
    # Eager Celery: the reconciler runs when the request's transaction commits.
    response = client.post(reverse("ui:version-deploy", args=["digits", version.number]), {"servers": ["local"]})
    deployment = Deployment.objects.get(version=version)
    assert response["Location"] == detail(deployment)
    assert AuditEvent.objects.filter(action="deployment.deploy", source=Source.UI).count() == 1
    return deployment


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)
def test_deploy_from_the_ui_ends_loaded(client_as, tmp_path, triton):
    operator = client_as("operator")
    deployment = deploy_from_the_ui(operator, tmp_path, triton, doubler_source(2))

    fragment = operator.get(status(deployment)).content.decode()
    assert 'data-state="loaded"' in fragment and "data-final" in fragment, fragment

    operator.post(reverse("ui:version-undeploy", args=["digits", 1]), {"server": "local"})
    fragment = operator.get(status(deployment)).content.decode()
    assert 'data-state="unloaded"' in fragment and "data-final" in fragment, fragment


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)
def test_a_failed_load_ends_with_tritons_error_on_the_page(client_as, tmp_path, triton):
    operator = client_as("operator")
    deployment = deploy_from_the_ui(operator, tmp_path, triton, BROKEN_MODEL_PY)

    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.FAILED and deployment.desired == DesiredState.LOADED
    fragment = html.unescape(operator.get(status(deployment)).content.decode())
    assert 'data-state="failed"' in fragment and "data-final" in fragment
    assert deployment.last_error and deployment.last_error in fragment
    page = html.unescape(operator.get(detail(deployment)).content.decode())
    assert f'data-testid="triton-error">{deployment.last_error}</pre>' in page


@pytest.mark.django_db
def test_deployment_page_queries_do_not_grow_with_its_history(client_as, tmp_path):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    deployment = make_deployment(tmp_path)
    operator = client_as("operator")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert operator.get(detail(deployment)).status_code == 200
        return len(captured)

    def add(transitions: int, kinds) -> None:
        DeploymentTransition.objects.bulk_create(
            DeploymentTransition(deployment=deployment, from_state="pending", to_state="failed")
            for _ in range(transitions)
        )
        for kind in kinds:
            CheckResult.objects.create(kind=kind, status=Status.OK, deployment=deployment)

    add(1, [CheckKind.MODEL_READY])
    few = queries()
    add(80, [CheckKind.LATENCY, CheckKind.SCHEMA, CheckKind.STATS])
    assert queries() == few <= 30
