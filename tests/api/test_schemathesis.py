"""schemathesis against the live API: no 5xx and no schema violation, over 1,000+ requests.

It starts a real server on the test database (pytest-django's live_server),
seeds a few objects, and runs schemathesis' command line with an admin token,
every check on. The same run by hand, against `scripts/run` or any server:

    schemathesis --config-file tests/api/schemathesis.toml run http://127.0.0.1:8000/api/schema/ \\
        --header "Authorization: Bearer $TOKEN" --checks all --max-examples 25 --workers 4

Set MODELHUB_SCHEMATHESIS_SEED to replay a run (the output prints its seed).
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from celery import current_app
from django.contrib.auth.models import User

from modelhub.api.tokens import issue_token
from modelhub.audit.actors import Actor
from modelhub.registry.services import get_or_create_model, move_alias, register_version
from modelhub.serving.models import InferenceServer
from modelhub.serving.services import request_deploy
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MIN_REQUESTS = 1000


@pytest.fixture
def no_task_execution():
    """Deploys only queue their reconcile task: generated servers have generated URLs."""
    eager = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = False
    yield
    current_app.conf.task_always_eager = eager


def seed(tmp_path: Path) -> str:
    actor = Actor()
    for name, factors in (("digits", (2, 3)), ("faces", (4,))):
        model = get_or_create_model(name, actor)
        for factor in factors:
            artifact = make_zip(tmp_path / f"{name}-{factor}.zip", {"1/model.py": doubler_source(factor)})
            version = register_version(model, artifact, DOUBLER_MANIFEST, actor).version
        move_alias(model, "production", version, actor)
    server = InferenceServer.objects.create(name="dead", base_url="http://127.0.0.1:9", labels=["staging"])
    digits = get_or_create_model("digits", actor)
    request_deploy(digits.versions.get(number=1), [server], actor)
    # A superuser: a token's scopes count only as far as its user's role allows.
    user = User.objects.create_superuser("schemathesis")
    return issue_token(name="schemathesis", user=user, scopes=["admin"], actor=actor)[1]


@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_error_or_schema_violation(live_server, tmp_path, settings, no_task_execution):
    settings.MEDIA_ROOT = tmp_path / "media"
    token = seed(tmp_path)
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{live_server.url}/api/schema/",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--max-examples",
        os.environ.get("MODELHUB_SCHEMATHESIS_EXAMPLES", "12"),
        # One worker: CPython 3.11's ast.parse is not thread-safe (gh-106905), and hypothesis
        # parses lambdas' source while describing strategies, so parallel workers crash
        # at random with "SystemError: AST constructor recursion depth mismatch".
        "--workers",
        "1",
        "--request-timeout",
        "30",
    ]
    if os.environ.get("MODELHUB_SCHEMATHESIS_SEED"):
        command += ["--seed", os.environ["MODELHUB_SCHEMATHESIS_SEED"]]
    # Extra options for a run by hand, e.g. "--report har --report-dir /tmp/st" for timings.
    command += shlex.split(os.environ.get("MODELHUB_SCHEMATHESIS_ARGS", ""))
    result = subprocess.run(command, capture_output=True, text=True, timeout=280, cwd=tmp_path)
    output = result.stdout + result.stderr
    print(output[-4000:])  # the summary, shown with -s or on failure
    assert result.returncode == 0, output[-30_000:]
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated.group(1)) >= MIN_REQUESTS, output[-5000:]
