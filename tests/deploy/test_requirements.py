"""requirements.txt is what production imports; requirements-dev.txt adds the rest.

Read from the source: every import statement of modelhub/** (lazy ones inside functions
too), the demo and the model that runs inside Triton aside, must be installed by
requirements.txt or what it pulls in, and nothing dev-only may be pulled in."""

import ast
import os
import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.manifests import REPO

# Not ModelHub processes: the demo (dev tooling; the image leaves it out) and the python-backend
# model that Triton runs in its own Python (modelhub/lib/onnx_models.py ships its source).
NOT_PRODUCTION = ("modelhub/demo/", "modelhub/lib/onnx_runner_model.py")
DEV_ONLY = {"scikit-learn", "skl2onnx", "nvidia-pytriton", "onnxruntime", "pytest", "playwright", "moto", "ruff"}


def production_imports() -> dict[str, list[str]]:
    """{top-level module: ["file:line", …]} of the third-party imports of production code."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "modelhub").rglob("*.py")):
        where = path.relative_to(REPO).as_posix()
        if where.startswith(NOT_PRODUCTION):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "modelhub" and top not in sys.stdlib_module_names:
                    found.setdefault(top, []).append(f"{where}:{node.lineno}")
    return found


def requirement_lines(path) -> list[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def installed_closure(lines: list[str]) -> set[str]:
    """The distributions these requirements install, with all they require (as installed here)."""
    todo = [Requirement(line) for line in lines if not line.startswith("-")]
    names: set[str] = set()
    seen: set[tuple[str, str]] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        names.add(name)
        for extra in ("", *sorted(requirement.extras)):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            for raw in metadata.requires(name) or []:
                sub = Requirement(raw)
                if sub.marker is None or sub.marker.evaluate({"extra": extra}):
                    todo.append(sub)
    return names


def test_every_production_import_is_installed_by_the_runtime_requirements():
    closure = installed_closure(requirement_lines(REPO / "requirements.txt"))
    providers = metadata.packages_distributions()
    missing = {}
    for module, places in production_imports().items():
        if module == "triton_python_backend_utils":  # Triton's own, inside the python backend
            continue
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & closure:
            missing[module] = places[:3]
    assert missing == {}, f"imported by production code, not installed by requirements.txt: {missing}"


def test_the_checker_sees_the_imports_it_must():
    imports = production_imports()
    assert {"django", "celery", "tritonclient", "gevent", "onnx", "scipy", "httptools"} <= set(imports)
    assert "sklearn" not in imports and "onnxruntime" not in imports


def test_nothing_dev_only_is_in_the_runtime_set():
    runtime = installed_closure(requirement_lines(REPO / "requirements.txt"))
    assert runtime & DEV_ONLY == set()


def test_the_dev_set_builds_on_the_runtime_set():
    runtime = requirement_lines(REPO / "requirements.txt")
    dev = requirement_lines(REPO / "requirements-dev.txt")
    assert dev[0] == "-r requirements.txt"
    for line in runtime + dev[1:]:
        assert "==" in line, f"not pinned: {line}"
    names = [canonicalize_name(Requirement(line).name) for line in runtime + dev[1:]]
    assert len(names) == len(set(names)), "a package is pinned twice"
    assert installed_closure(dev[1:]) >= DEV_ONLY


def test_production_modules_import_without_any_dev_only_package(tmp_path):
    # A fresh process in which the dev-only packages cannot be imported (as in the image):
    # every production module imports and `manage.py check` passes.
    # (modelhub.demo is left out of the image by .dockerignore: test_image.py starts that context.)
    blocked = ["sklearn", "skl2onnx", "pytriton", "onnxruntime", "pytest", "devtools", "moto"]
    code = f"""
import importlib, importlib.abc, pathlib, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"{{name}} is not in the production image")
sys.meta_path.insert(0, Block())
import django
django.setup()
from django.core.management import call_command
call_command("check")
for path in sorted(pathlib.Path("modelhub").rglob("*.py")):
    name = ".".join(path.with_suffix("").parts).removesuffix(".__init__")
    if str(path).startswith({NOT_PRODUCTION!r}) or name == "modelhub.gateway.__main__":
        continue
    importlib.import_module(name)
print("imported")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELHUB_", "DJANGO_"))}
    env |= {"DJANGO_SETTINGS_MODULE": "modelhub.settings", "MODELHUB_VAR_DIR": str(tmp_path)}
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imported" in result.stdout
