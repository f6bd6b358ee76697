"""Reading the deployment files (docker/, .env.example) and what they must agree with.

No Docker engine or cluster exists where ModelHub is built: these are the readers the
tests in this folder check the Compose file, the Kubernetes manifests, the image and the
entrypoint with, against modelhub/settings.py's own source.
"""

import ast
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
K8S = DOCKER / "k8s"
ENTRYPOINT = DOCKER / "entrypoint.sh"
SETTINGS_SOURCE = REPO / "modelhub" / "settings.py"
# The entrypoint's modes that start ModelHub processes (docker/entrypoint.sh).
MODES = {"web", "gateway", "worker", "beat", "migrate", "manage"}
# Variables these files may set only if settings.py reads them (or their X_FILE form).
OWN_PREFIXES = ("MODELHUB_", "DJANGO_")
_UPPER_SNAKE = re.compile(r"[A-Z][A-Z0-9_]*[A-Z0-9]")


def settings_variables(source: str | None = None) -> set[str]:
    """Every environment variable modelhub/settings.py reads, from its source.

    A read is a call whose first argument is an UPPER_SNAKE string and whose function is
    `env` or one of its methods (env.str, env.list, …), os.environ.get / os.getenv, or a
    helper defined in settings.py itself (_read, _strict_bool, _url_with_scheme, …: each
    takes the variable's name first). Dictionary methods (DATABASES[...].setdefault) are not.
    """
    tree = ast.parse(source if source is not None else SETTINGS_SOURCE.read_text())
    helpers = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    found = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        name = node.args[0].value
        if not (isinstance(name, str) and _UPPER_SNAKE.fullmatch(name)):
            continue
        func = ast.unparse(node.func)
        if func in helpers or func == "env" or func.startswith("env.") or func in ("os.environ.get", "os.getenv"):
            found.add(name)
    for node in ast.walk(tree):  # os.environ["X"]
        if (
            isinstance(node, ast.Subscript)
            and ast.unparse(node.value) == "os.environ"
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            found.add(node.slice.value)
    return found


def is_settings_variable(name: str, known: set[str]) -> bool:
    """A variable settings.py reads, or its X_FILE form (any variable read through `env`)."""
    return name in known or (name.endswith("_FILE") and name[: -len("_FILE")] in known)


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def modelhub_services(doc: dict) -> dict[str, dict]:
    """The Compose services that run ModelHub's image (a mode of its entrypoint)."""
    image = doc["x-modelhub"]["image"]
    return {name: svc for name, svc in doc["services"].items() if svc.get("image") == image}


def worker_queues(command: list[str]) -> list[str]:
    assert command[0] == "worker", command
    return command[1].split(",")


def k8s_documents() -> dict[str, list[dict]]:
    """{file name: its documents} for every manifest in docker/k8s (kustomization.yaml aside)."""
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def k8s_objects(kind: str | None = None) -> list[dict]:
    return [doc for docs in k8s_documents().values() for doc in docs if kind is None or doc["kind"] == kind]


def env_example() -> tuple[dict[str, str], set[str], list[str]]:
    """(variables set, variables shown commented out, the file's lines) of .env.example."""
    lines = (REPO / ".env.example").read_text().splitlines()
    set_, shown = {}, set()
    for line in lines:
        if match := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            set_[match[1]] = match[2]
        elif match := re.fullmatch(r"#([A-Z][A-Z0-9_]*)=.*", line):
            shown.add(match[1])
    return set_, shown, lines


@cache
def settings_defaults() -> dict:
    """Values of modelhub.settings with nothing set (a fresh process, no variable of ours)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELHUB_", "DJANGO_", "DATABASE_URL"))}
    env.pop("CELERY_BROKER_URL", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    code = (
        "import json, modelhub.settings as s; print(json.dumps({"
        "'GATEWAY_PORT': s.GATEWAY_PORT, 'TASK_QUEUE_NAMES': s.TASK_QUEUE_NAMES,"
        "'CELERY_TASK_ROUTES': s.CELERY_TASK_ROUTES, 'MODELHUB_BASE_URL': s.MODELHUB_BASE_URL}))"
    )
    import tempfile

    with tempfile.TemporaryDirectory(prefix="modelhub-defaults-") as var:
        env["MODELHUB_VAR_DIR"] = var
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=60
        )
    return json.loads(out.stdout.strip().splitlines()[-1])
