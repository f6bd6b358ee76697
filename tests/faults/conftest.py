"""Fixtures of the fault tests: the processes a test starts, and a person with a token."""

import shutil

import pytest
from django.contrib.auth.models import Group, User

from modelhub.api.tokens import issue_token
from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from tests.faults.processes import PG_BIN, OwnPostgres, OwnRedis, Processes


@pytest.fixture
def processes(tmp_path):
    started = Processes(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def own_redis():
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH (Debian package redis-server): Redis outages need one of their own")
    server = OwnRedis().start()
    yield server
    server.destroy()


@pytest.fixture
def own_postgres():
    if PG_BIN is None:
        pytest.skip("no Postgres binaries under /usr/lib/postgresql/*/bin: a restart needs a cluster of its own")
    server = OwnPostgres().start()
    yield server
    server.destroy()


@pytest.fixture
def admin_token(db) -> str:
    """An admin's API token with every scope (a transactional test's flush removed the role groups)."""
    user = User.objects.create_user("ops", password="pw-ops", email="ops@example.com")
    user.groups.add(Group.objects.get_or_create(name="admin")[0])
    _, text = issue_token(name="faults", user=user, scopes=["admin"], actor=Actor(source=Source.CLI))
    return text
