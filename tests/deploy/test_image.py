"""docker/Dockerfile and .dockerignore, checked without a Docker engine: the Dockerfile parsed
(dockerfile-parse) and linted (hadolint), the build context computed by Docker's own rules
(the docker SDK's exclude_paths), and that context started as the image would start it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser

from tests.deploy.manifests import DOCKER, REPO

BIN = Path(sys.executable).parent
DOCKERFILE = DOCKER / "Dockerfile"


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def build_context(root: Path) -> set[str]:
    """The files `docker build -f docker/Dockerfile .` sends from root, by .dockerignore."""
    return set(exclude_paths(str(root), dockerignore_patterns(), dockerfile="docker/Dockerfile"))


@pytest.fixture(scope="module")
def parsed():
    parser = DockerfileParser(path=str(DOCKERFILE))
    return parser.structure


def stages(structure) -> list[list[dict]]:
    found: list[list[dict]] = []
    for instruction in structure:
        if instruction["instruction"] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def test_hadolint_finds_nothing():
    result = subprocess.run([BIN / "hadolint", DOCKERFILE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_builder_stage_and_a_slim_non_root_runtime(parsed):
    builder, runtime = stages(parsed)
    assert builder[0]["value"].endswith("AS builder")
    assert runtime[0]["value"].endswith("AS runtime")
    builder_runs = " ".join(i["value"] for i in builder if i["instruction"] == "RUN")
    assert "pip wheel" in builder_runs and "-r requirements.txt" in builder_runs
    assert "requirements-dev" not in DOCKERFILE.read_text()
    # The runtime stage takes the built virtualenv, never runs pip, and runs as a numeric non-root user.
    assert any(i["instruction"] == "COPY" and i["value"].startswith("--from=builder /opt/venv") for i in runtime)
    assert not any(i["instruction"] == "RUN" and "pip " in i["value"] for i in runtime)
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert runtime[-1]["instruction"] in ("CMD", "ENTRYPOINT")
    assert [i["value"] for i in runtime if i["instruction"] == "ENTRYPOINT"] == ['["/app/docker/entrypoint.sh"]']


def test_static_files_are_collected_at_build_time(parsed):
    _, runtime = stages(parsed)
    runs = [i["value"] for i in runtime if i["instruction"] == "RUN"]
    assert any("manage.py collectstatic --noinput" in run for run in runs)
    envs = " ".join(i["value"] for i in runtime if i["instruction"] == "ENV")
    assert "MODELHUB_STATIC_ROOT=/app/staticfiles" in envs


def test_the_health_check_asks_the_webs_liveness_endpoint(parsed):
    checks = [i["value"] for i in parsed if i["instruction"] == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "http://127.0.0.1:8000/healthz/live" in checks[0]


def test_every_copy_source_is_in_the_build_context(parsed):
    context = build_context(REPO)
    _, runtime = stages(parsed)
    for instruction in runtime:
        if instruction["instruction"] != "COPY" or instruction["value"].startswith("--from"):
            continue
        *sources, _ = instruction["value"].split()
        for source in sources:
            inside = [path for path in context if path == source or path.startswith(source.rstrip("/") + "/")]
            assert inside, f"COPY {source}: not in the build context (.dockerignore)"


def test_the_dockerignore_keeps_state_tooling_and_dev_code_out(tmp_path):
    keep = [
        "manage.py",
        "requirements.txt",
        "modelhub/settings.py",
        "modelhub/serving/reconciler.py",
        "templates/base.html",
        "static/modelhub/modelhub.css",
        "docker/entrypoint.sh",
        "docker/wait_for_db.py",
        "docker/gunicorn.conf.py",
    ]
    leave = [
        "var/admin-password.txt",
        "var/modelhub.sqlite3",
        "var/artifacts/m/1/model.onnx",
        "media/x.bin",
        "modelhub/registry/stray.sqlite3",
        ".venv/bin/python",
        "nested/.venv/bin/python",
        ".git/HEAD",
        ".env",
        "tests/conftest.py",
        "bench/fleet_deploy.py",
        "devtools/local_triton.py",
        "modelhub/demo/apps.py",
        "node_modules/x/index.js",
        "modelhub/__pycache__/settings.cpython-311.pyc",
        "requirements-dev.txt",
        "docker/k8s/web.yaml",
        "docker/docker-compose.yml",
    ]
    for name in keep + leave:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    context = build_context(tmp_path)
    assert set(keep) <= context
    assert context & set(leave) == set()


def test_the_build_context_starts_in_production_without_the_demo_or_devtools(tmp_path):
    # What the image holds, copied as docker build would, then checked and collected as its
    # build step does: the settings go on without modelhub.demo (and nothing imports devtools).
    app = tmp_path / "app"
    for name in build_context(REPO):  # files and folders
        if (REPO / name).is_dir():
            (app / name).mkdir(parents=True, exist_ok=True)
        else:
            (app / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, app / name)
    assert not (app / "modelhub" / "demo").exists() and not (app / "devtools").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELHUB_", "DJANGO_", "PYTHON"))}
    env |= {
        "DJANGO_SETTINGS_MODULE": "modelhub.settings",
        "MODELHUB_ENV": "production",
        "DJANGO_SECRET_KEY": "k" * 20 + "-build-context-test-" + "z" * 20,
        "DJANGO_ALLOWED_HOSTS": "modelhub.example.com",
        "MODELHUB_VAR_DIR": str(tmp_path / "var"),
        "MODELHUB_STATIC_ROOT": str(tmp_path / "staticfiles"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    code = """
import sys, django
django.setup()
from django.conf import settings
from django.core.management import call_command
import modelhub.settings
assert modelhub.settings.__file__.startswith(sys.argv[1]), modelhub.settings.__file__
assert "modelhub.demo" not in settings.INSTALLED_APPS, settings.INSTALLED_APPS
call_command("check", "--deploy", "--fail-level", "WARNING")
# What collectstatic gathers is found (the whole collect compresses 5 MB of Plotly: minutes here).
call_command("findstatic", "modelhub/modelhub.css", "vendor/plotly.min.js", "admin/css/base.css")
"""
    result = subprocess.run(
        [sys.executable, "-c", code, str(app)], cwd=app, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("modelhub/modelhub.css", "vendor/plotly.min.js", "admin/css/base.css"):
        assert f"Found '{name}' here" in result.stdout
