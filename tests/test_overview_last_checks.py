"""The overview shows each deployment's latest result of each check, in a fixed number of queries."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.registry.services import register_upload
from modelhub.serving.models import Deployment, InferenceServer
from tests.conftest import doubler_source, make_zip

pytestmark = pytest.mark.django_db


@pytest.fixture
def deploy(tmp_path, actor, manifest):
    server = InferenceServer.objects.create(name="gpu-1", base_url="http://127.0.0.1:9")

    def make(name: str) -> Deployment:
        artifact = make_zip(tmp_path / f"{name}.zip", {"1/model.py": doubler_source(len(name) + 2)})
        version = register_upload(name, artifact, manifest, actor, create=True).version
        return Deployment.objects.create(version=version, server=server)

    return make


def result(deployment: Deployment, kind: str, status: str, age_s: int = 0, **fields) -> CheckResult:
    return CheckResult.objects.create(
        kind=kind,
        status=status,
        deployment=deployment,
        server=deployment.server,
        version=deployment.version,
        created_at=timezone.now() - timedelta(seconds=age_s),
        **fields,
    )


def row_of(page: str, model: str) -> str:
    return next(row for row in re.split(r"<tr>", page) if f"<td>{model}</td>" in row)


def overview(client) -> tuple[str, int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/")
    assert response.status_code == 200
    return response.content.decode(), len(queries)


def test_each_deployment_shows_its_latest_result_of_each_check(client, django_user_model, deploy):
    client.force_login(django_user_model.objects.create_user("operator-page"))
    digits, faces = deploy("digits"), deploy("faces")
    deploy("quiet")
    result(digits, CheckKind.MODEL_READY, Status.OK, age_s=120)
    result(digits, CheckKind.MODEL_READY, Status.FAIL, message="model 'digits' is not ready: UNAVAILABLE")
    result(digits, CheckKind.LATENCY, Status.OK, value=12.25)
    result(faces, CheckKind.SCHEMA, Status.FAIL, message="output OUTPUT: dims [-1] served as [2]")
    result(faces, CheckKind.SCHEMA, Status.OK, age_s=600)
    page, _ = overview(client)
    row = row_of(page, "digits")
    assert "model readiness fail" in row and "model readiness ok" not in row
    assert "latency probe ok (12.25)" in row
    assert "is not ready: UNAVAILABLE" in row  # Triton's reason, on hover
    assert row.index("model readiness") < row.index("latency probe")  # a fixed order of checks
    faces_row = row_of(page, "faces")
    assert "schema conformance fail" in faces_row and "dims [-1] served as [2]" in faces_row
    assert "none yet" in row_of(page, "quiet")


def test_the_last_checks_cost_the_same_queries_for_any_number_of_deployments(client, django_user_model, deploy):
    client.force_login(django_user_model.objects.create_user("operator-page"))
    for name in ("a1", "a2"):
        d = deploy(name)
        result(d, CheckKind.MODEL_READY, Status.OK)
        result(d, CheckKind.LATENCY, Status.OK, value=1.0)
    _, few = overview(client)
    for name in ("b1", "b2", "b3", "b4", "b5"):
        d = deploy(name)
        for kind in (CheckKind.MODEL_READY, CheckKind.SCHEMA, CheckKind.LATENCY, CheckKind.STATS):
            result(d, kind, Status.OK, value=2.0)
            result(d, kind, Status.WARN, age_s=60)
    page, many = overview(client)
    assert page.count("model readiness ok") == 7
    assert many == few
