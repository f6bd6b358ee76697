"""The lists that only grow page by cursor: the audit log and a deployment's transitions.

No COUNT over the table, the same cost for any page, and the nested transitions of a
deployment's detail are the newest few only, with a link to all of them.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from modelhub.audit.actors import Actor
from modelhub.audit.log import record
from modelhub.audit.models import AuditEvent
from modelhub.serving.models import Deployment, DeploymentTransition
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


def follow(client, url: str) -> tuple[list[dict], int]:
    """Every row behind `url`, following `next` links; and how many pages that took."""
    rows, pages = [], 0
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.json()
        body = response.json()
        assert set(body) == {"next", "previous", "results"}  # no count
        rows += body["results"]
        url, pages = body["next"], pages + 1
    return rows, pages


@pytest.fixture
def events(db):
    AuditEvent.objects.all().delete()
    return [record(Actor(), f"test.event-{i:02}") for i in range(25)]


def test_the_audit_log_pages_by_cursor_without_counting(admin_api, events):
    with CaptureQueriesContext(connection) as queries:
        response = admin_api.get("/api/v1/audit/?limit=10")
    assert not [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert response.status_code == 200
    assert [e["action"] for e in response.json()["results"]] == [f"test.event-{i:02}" for i in range(24, 14, -1)]

    rows, pages = follow(admin_api, "/api/v1/audit/?limit=10")
    assert pages == 3
    assert [e["action"] for e in rows] == [f"test.event-{i:02}" for i in range(24, -1, -1)]

    oldest_first, _ = follow(admin_api, "/api/v1/audit/?limit=7&ordering=created_at")
    assert [e["action"] for e in oldest_first] == [f"test.event-{i:02}" for i in range(25)]

    second = admin_api.get(admin_api.get("/api/v1/audit/?limit=10").json()["next"]).json()
    back = admin_api.get(second["previous"]).json()
    assert [e["id"] for e in back["results"]] == [e["id"] for e in rows[:10]]


def test_filters_keep_working_with_the_cursor(admin_api, events):
    rows, _ = follow(admin_api, "/api/v1/audit/?action_prefix=test.event-1&limit=3")
    assert [e["action"] for e in rows] == [f"test.event-{i:02}" for i in range(19, 9, -1)]


@pytest.mark.parametrize(
    "query, field, says",
    [
        ("ordering=action", "ordering", "created_at, id"),
        ("offset=10", "offset", "follow the next and previous links"),
        ("cursor=bm9wZQ", "cursor", "is not a cursor this list gave out"),
        ("cursor=cD1ub3QtYS1kYXRl", "cursor", "is not a cursor this list gave out"),  # p=not-a-date
        ("limit=0", "limit", "between 1 and 1000"),
        ("limit=ten", "limit", "is not an integer"),
    ],
)
def test_what_a_cursor_list_cannot_do_is_a_400_saying_so(admin_api, events, query, field, says):
    response = admin_api.get(f"/api/v1/audit/?{query}")
    assert response.status_code == 400, response.json()
    assert says in error_of(response)["fields"][field]


@pytest.fixture
def failing_deployment(registered, dead_server):
    """A deployment that failed 25 times (as a dead server's retries make it)."""
    model = registered("digits")
    deployment = Deployment.objects.create(version=model.versions.get(), server=dead_server)
    for i in range(25):
        DeploymentTransition.objects.create(
            deployment=deployment, from_state="failed", to_state="failed", error=f"attempt {i}"
        )
    return deployment


def test_a_deployments_detail_nests_the_newest_transitions_and_links_to_all(admin_api, failing_deployment):
    detail = admin_api.get(f"/api/v1/deployments/{failing_deployment.pk}/").json()
    assert [t["error"] for t in detail["transitions"]] == [f"attempt {i}" for i in range(24, 4, -1)]
    assert detail["transition_count"] == 25
    assert detail["transitions_url"].endswith(f"/api/v1/deployments/{failing_deployment.pk}/transitions/")

    rows, pages = follow(admin_api, detail["transitions_url"] + "?limit=10")
    assert pages == 3
    assert [t["error"] for t in rows] == [f"attempt {i}" for i in range(24, -1, -1)]
    oldest_first, _ = follow(admin_api, detail["transitions_url"] + "?ordering=created_at")
    assert oldest_first == rows[::-1]
    refused = admin_api.get(detail["transitions_url"] + "?ordering=error")
    assert refused.status_code == 400 and "created_at, id" in error_of(refused)["fields"]["ordering"]


def test_a_deployments_detail_costs_the_same_queries_for_any_number_of_transitions(
    admin_api, failing_deployment, django_assert_max_num_queries
):
    url = f"/api/v1/deployments/{failing_deployment.pk}/"
    with CaptureQueriesContext(connection) as few:
        admin_api.get(url)
    DeploymentTransition.objects.bulk_create(
        DeploymentTransition(deployment=failing_deployment, from_state="failed", to_state="failed") for _ in range(200)
    )
    with django_assert_max_num_queries(len(few)):
        assert admin_api.get(url).json()["transition_count"] == 225


def test_transitions_of_another_models_deployment_are_not_found(client_with, failing_deployment, registered):
    registered("faces")
    restricted = client_with("read", models=["faces"])
    assert restricted.get(f"/api/v1/deployments/{failing_deployment.pk}/transitions/").status_code == 404
