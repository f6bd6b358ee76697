"""docker/docker-compose.yml, checked without a Docker engine: against the compose-spec
schema, the entrypoint's modes, the Celery queues and the settings' ports."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from celery.app.routes import MapRoute
from django.urls import resolve

from tests.deploy.manifests import (
    COMPOSE_FILE,
    DOCKER,
    MODES,
    OWN_PREFIXES,
    REPO,
    compose,
    is_settings_variable,
    modelhub_services,
    settings_defaults,
    settings_variables,
    worker_queues,
)

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def doc():
    return compose()


def test_the_compose_file_is_valid_against_the_compose_spec():
    # check-jsonschema ships the compose-spec's JSON schema (vendor.compose-spec).
    result = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE_FILE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_modelhub_service_is_the_one_image_built_from_the_dockerfile(doc):
    build = doc["x-modelhub"]["build"]
    assert (COMPOSE_FILE.parent / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]).is_file()
    services = modelhub_services(doc)
    assert set(services) >= {"migrate", "web", "gateway", "beat"}
    for name, svc in services.items():
        assert svc["build"] == build, name
        assert svc["command"][0] in MODES, f"{name}: {svc['command'][0]!r} is not a mode of docker/entrypoint.sh"


def test_the_settings_come_from_the_repositorys_env_file(doc):
    for name, svc in modelhub_services(doc).items():
        env_file = svc["env_file"]
        assert (COMPOSE_FILE.parent / env_file).resolve() == REPO / ".env", name
    assert (REPO / ".env.example").is_file()  # what .env is copied from


def test_every_variable_compose_sets_is_one_the_settings_read(doc):
    known = settings_variables()
    text = COMPOSE_FILE.read_text()
    named = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", text))  # interpolations
    for svc in doc["services"].values():
        environment = svc.get("environment") or {}
        named |= set(environment if isinstance(environment, dict) else (e.split("=")[0] for e in environment))
    ours = {n for n in named if n.startswith(OWN_PREFIXES)}
    unknown = sorted(n for n in ours if not is_settings_variable(n, known))
    assert unknown == [], f"set in docker-compose.yml but never read by modelhub/settings.py: {unknown}"


def test_the_workers_consume_every_queue_a_task_is_routed_to(doc):
    from modelhub.celery import app

    defaults = settings_defaults()
    queues = set(defaults["TASK_QUEUE_NAMES"])
    workers = {name: svc for name, svc in modelhub_services(doc).items() if svc["command"][0] == "worker"}
    consumed = set()
    for name, svc in workers.items():
        mine = worker_queues(svc["command"])
        assert set(mine) <= queues, f"{name} consumes {set(mine) - queues}, not in TASK_QUEUE_NAMES"
        assert "-B" not in svc["command"] and "--beat" not in svc["command"], f"{name} embeds a beat"
        consumed |= set(mine)
    assert consumed == queues, f"no worker consumes {queues - consumed}"

    # Every task ModelHub registers lands on a consumed queue (the default one is "celery").
    app.loader.import_default_modules()
    route = MapRoute(defaults["CELERY_TASK_ROUTES"])
    tasks = [name for name in app.tasks if name.startswith("modelhub.")]
    assert len(tasks) > 5
    for task in tasks:
        queue = (route(task) or {}).get("queue", app.conf.task_default_queue)
        assert queue in consumed, f"{task} goes to {queue!r}, which no Compose worker consumes"


def test_exactly_one_beat(doc):
    beats = [name for name, svc in modelhub_services(doc).items() if svc["command"][0] == "beat"]
    assert beats == ["beat"]
    assert doc["services"]["beat"]["deploy"]["replicas"] == 1


def test_ports_agree_with_the_settings_and_the_servers(doc):
    defaults = settings_defaults()
    web, gateway = doc["services"]["web"], doc["services"]["gateway"]
    # web: gunicorn binds 8000 (docker/gunicorn.conf.py), the port of MODELHUB_BASE_URL's default.
    gunicorn_conf = (DOCKER / "gunicorn.conf.py").read_text()
    assert re.search(r'^bind = "0\.0\.0\.0:8000"$', gunicorn_conf, re.M)
    assert defaults["MODELHUB_BASE_URL"].endswith(":8000")
    assert web["ports"] == ["8000:8000"]
    assert "127.0.0.1:8000/healthz/live" in " ".join(web["healthcheck"]["test"])
    # gateway: `python -m modelhub.gateway` listens on MODELHUB_GATEWAY_PORT unless told otherwise.
    port = defaults["GATEWAY_PORT"]
    assert gateway["command"] == ["gateway"]
    assert gateway["ports"] == [f"{port}:{port}"]
    assert f"127.0.0.1:{port}/v2/health/live" in " ".join(gateway["healthcheck"]["test"])


def test_the_health_checks_ask_endpoints_that_exist(doc):
    # Django's own URL map (not a hand list): a renamed endpoint fails here.
    assert resolve("/healthz/live").url_name == "live"
    assert resolve("/healthz/ready").url_name == "ready"
    # The gateway's routes are its own (an ASGI app): its source compares the path to it.
    gateway = "".join(path.read_text() for path in (REPO / "modelhub" / "gateway").glob("*.py"))
    assert re.search(r'path == b?"/v2/health/live"', gateway)
    # and `python -m modelhub.gateway` takes --host and listens on MODELHUB_GATEWAY_PORT by default.
    main = (REPO / "modelhub" / "gateway" / "__main__.py").read_text()
    assert '"--host"' in main and "default=settings.GATEWAY_PORT" in main
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "http://127.0.0.1:8000/healthz/live" in dockerfile


def test_everything_waits_for_the_database_the_broker_and_the_migrations(doc):
    for name, svc in modelhub_services(doc).items():
        needs = svc["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy", name
        if name == "migrate":
            continue
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
        if name != "register-triton":
            assert needs["redis"]["condition"] == "service_healthy", name
    assert doc["services"]["migrate"]["command"] == ["migrate"]
    assert doc["services"]["migrate"]["restart"] == "no"


def test_volumes_are_named_declared_and_where_the_image_keeps_its_state(doc):
    declared = set(doc["volumes"])
    used = set()
    for name, svc in doc["services"].items():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert source in declared, f"{name}: {source!r} is not a named volume"
            used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"
    var_dir = re.search(r"MODELHUB_VAR_DIR=(\S+)", (DOCKER / "Dockerfile").read_text())[1]
    for name, svc in modelhub_services(doc).items():
        assert f"modelhub-var:{var_dir}" in svc["volumes"], name
    assert "pgdata:/var/lib/postgresql/data" in doc["services"]["postgres"]["volumes"]


def test_triton_runs_from_nvidias_pinned_image_in_explicit_mode_on_the_gpu_or_cpu(doc):
    gpu, cpu = doc["services"]["triton"], doc["services"]["triton-cpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    for svc in (gpu, cpu):
        assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", svc["image"]), svc["image"]
        assert "--model-control-mode=explicit" in svc["command"]
    assert gpu["image"] == cpu["image"] and gpu["command"] == cpu["command"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "deploy" not in cpu
    # Both answer as "triton", the host the registration names.
    assert "triton" in cpu["networks"]["default"]["aliases"]
    register = doc["services"]["register-triton"]
    assert set(register["profiles"]) == {"gpu", "cpu"}
    assert register["command"][:2] == ["manage", "register_server"]
    assert "--url=http://triton:8000" in register["command"]
    assert "--metrics-url=http://triton:8002/metrics" in register["command"]
