"""Load on loopback (issue 10): 50 concurrent CI uploads and 200 concurrent page loads against
a real gunicorn as production runs it (docker/gunicorn.conf.py, 4 workers x 4 threads) answer
without one error, each upload's version exists exactly once, and each phase ends in bounded time.

The load itself is bench/loopback_load.py's (one implementation); bench/README.md has its figures."""

import sys

import pytest
from django.contrib.auth.models import Group, User
from django.db.models import Count

from modelhub.access.roles import Scope
from modelhub.api.tokens import issue_token
from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.registry.models import ModelVersion
from tests.conftest import DOUBLER_MANIFEST
from tests.faults.processes import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import loopback_load  # bench/ is not a package: on the path above

pytestmark = [pytest.mark.django_db(transaction=True)]

UPLOADS, PAGES = 50, 200
PHASE_BOUND_S = 120  # ~3 s each on the 2 shared cores of the development machine


def test_50_concurrent_uploads_and_200_concurrent_page_loads_answer_without_errors(processes, tmp_path):
    ci = User.objects.create_user("ci-bot")
    ci.groups.add(Group.objects.get_or_create(name="admin")[0])
    _, token = issue_token(name="ci", user=ci, scopes=[Scope.UPLOAD], actor=Actor(source=Source.CLI))
    cookies = loopback_load.session_cookies(loopback_load.viewer())
    artifacts = loopback_load.write_artifacts(tmp_path / "artifacts", UPLOADS)
    web = loopback_load.start_web(processes.env(broker="memory://localhost/"), tmp_path / "gunicorn.log")
    try:
        uploads = loopback_load.run_uploads(web.url, token, artifacts, DOUBLER_MANIFEST)
        pages = loopback_load.run_pages(web.url, cookies, loopback_load.page_paths("load-0"), PAGES)
    finally:
        web.stop()
        print(web.log_tail())

    assert uploads.errors == [], uploads.errors[:5]
    assert uploads.statuses == [201] * UPLOADS  # every one a new version, none an idempotent replay
    assert uploads.wall_s < PHASE_BOUND_S, uploads.summary()
    rows = ModelVersion.objects.filter(model__name__startswith="load-").values("model__name").annotate(n=Count("id"))
    assert {row["model__name"]: row["n"] for row in rows} == {f"load-{i}": 1 for i in range(UPLOADS)}

    assert pages.errors == [], pages.errors[:5]
    assert pages.statuses == [200] * PAGES  # signed in: no redirect to the login page
    assert pages.wall_s < PHASE_BOUND_S, pages.summary()
