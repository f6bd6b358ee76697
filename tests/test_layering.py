"""The floors of docs/architecture.md: an app never imports one above it.

Read from the source (every import statement, those inside functions too),
so a lazy import that dodges a cycle at start-up is caught as well.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "modelhub"

# Higher numbers build on lower ones; apps on one floor may use each other.
FLOORS = {
    "lib": 0,
    "access": 1,  # roles and scopes: read by every app's admin, the API and the UI
    "audit": 1,
    "registry": 2,
    "serving": 3,
    "monitoring": 4,
    "alerts": 5,
    "api": 6,
    "ui": 6,
    "ops": 6,  # probes and /metrics: reads serving, monitoring and alerts at scrape time
    "gateway": 6,  # the inference gateway: reads registry, serving and api (tokens), hands samples to monitoring
    "demo": 7,  # dev tooling: may use anything, and nothing uses it
}


def apps() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def imported_apps(app: str, package: Path = PACKAGE) -> dict[str, list[str]]:
    """{app it imports: ["file:line", …]} over every module of `app`."""
    found: dict[str, list[str]] = {}
    for path in sorted((package / app).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:  # relative imports stay inside their app
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "modelhub" and len(parts) > 1 and parts[1] in FLOORS:
                    where = f"{path.relative_to(package.parent)}:{node.lineno}"
                    found.setdefault(parts[1], []).append(where)
    return found


def test_every_app_has_a_floor():
    assert set(apps()) <= set(FLOORS), f"add {sorted(set(apps()) - set(FLOORS))} to FLOORS (and the architecture doc)"


@pytest.mark.parametrize("app", apps())
def test_an_app_never_imports_one_above_it(app):
    above = {
        other: places for other, places in imported_apps(app).items() if FLOORS[other] > FLOORS.get(app, len(FLOORS))
    }
    assert above == {}, f"{app} imports apps above it: {above}"


def test_the_registry_knows_nothing_of_serving():
    # The one exception there used to be: deleting a model checked its deployments
    # from inside the registry. That check now lives in serving.services.
    assert "serving" not in imported_apps("registry")


def test_the_checker_sees_lazy_and_plain_imports(tmp_path):
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "services.py").write_text(
        "import modelhub.lib.archives\n"
        "def delete():\n"
        "    from modelhub.serving.models import Deployment\n"
        "    from .models import Model\n"
    )
    assert imported_apps("registry", tmp_path) == {
        "lib": [f"{tmp_path.name}/registry/services.py:1"],
        "serving": [f"{tmp_path.name}/registry/services.py:3"],
    }
