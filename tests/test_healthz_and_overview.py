"""The two pages anyone reaches first: /healthz (anonymous) and the overview (signed in)."""

import logging
import socket

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from modelhub.registry.models import Alias
from modelhub.registry.services import register_upload
from modelhub.serving.models import Deployment, InferenceServer, ObservedState
from modelhub.ui import views

# --- /healthz --------------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_answers_ok_while_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_says_only_database_unavailable_and_logs_the_rest(client, django_db_blocker, monkeypatch, caplog):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    with django_db_blocker.unblock():
        connection.close()
        monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
        monkeypatch.setitem(connection.settings_dict, "PORT", str(dead_port))
        try:
            with caplog.at_level(logging.ERROR, logger="modelhub.ui.views"):
                response = client.get("/healthz")
        finally:
            connection.close()
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "database unavailable"}
    # The caller learns nothing of the database; the log has what the operator needs.
    assert str(dead_port) not in response.content.decode()
    assert str(dead_port) in caplog.text


# --- the overview ----------------------------------------------------------------------


@pytest.fixture
def populate(db, tmp_path, actor, manifest):
    """populate(n): n servers and n models, each model with one version deployed to one server."""
    from tests.conftest import doubler_source, make_zip

    def make(n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            server = InferenceServer.objects.create(name=f"server-{i:03}", base_url="http://127.0.0.1:9")
            artifact = make_zip(tmp_path / f"m{i}.zip", {"1/model.py": doubler_source(i + 2)})
            version = register_upload(f"model-{i:03}", artifact, manifest, actor, create=True).version
            Alias.objects.create(model=version.model, name="production", version=version)
            observed = ObservedState.FAILED if i == start + n - 1 else ObservedState.LOADED
            Deployment.objects.create(version=version, server=server, observed=observed)

    return make


@pytest.fixture
def signed_in(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("viewer-page"))
    return client


def _queries_for_overview(client) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/")
    assert response.status_code == 200
    return len(queries), response.content.decode()


def test_the_overview_shows_a_bounded_number_of_rows_and_says_how_many_more(signed_in, populate, monkeypatch):
    monkeypatch.setattr(views, "OVERVIEW_ROWS", 3)
    populate(5)
    _, page = _queries_for_overview(signed_in)
    assert "server-002" in page and "server-003" not in page
    assert "and 2 more servers" in page
    assert "and 2 more models" in page
    assert "and 2 more deployments" in page
    # The failed deployment is the last by name, yet shown: failures come first.
    assert "model-004" in page and 'class="state-failed"' in page
    assert "production→v1" in page


def test_the_overview_costs_the_same_queries_for_any_number_of_rows(
    signed_in, populate, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(views, "OVERVIEW_ROWS", 3)
    populate(2)
    few, page = _queries_for_overview(signed_in)
    assert "more" not in page
    populate(8, start=2)
    many, page = _queries_for_overview(signed_in)
    assert "and 7 more models" in page
    assert many <= few + 3  # one COUNT per section that has more rows than it shows
    with django_assert_max_num_queries(few + 3):
        signed_in.get("/")
