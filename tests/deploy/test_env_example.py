""".env.example lists every setting modelhub/settings.py reads, each with a comment, sets
nothing the settings do not read, and its values start ModelHub in production."""

import os
import secrets
import subprocess
import sys

from tests.deploy.manifests import (
    OWN_PREFIXES,
    REPO,
    env_example,
    is_settings_variable,
    k8s_objects,
    settings_variables,
)


def test_the_settings_variables_are_read_from_the_source():
    known = settings_variables()
    # A sample of each way settings.py reads one: _read, _strict_bool, _url_with_scheme, _retention_days.
    assert {"DATABASE_URL", "DJANGO_DEBUG", "MODELHUB_GATEWAY_PORT", "MODELHUB_RETENTION_DAYS_AUDIT"} <= known
    assert len(known) > 50
    source = (
        "def _helper(name, default): ...\n"
        "A = _helper('MODELHUB_A', 1)\n"
        "B = env.int('MODELHUB_B', default=2)\n"
        "C = os.environ.get('MODELHUB_C')\n"
        "D = os.environ['MODELHUB_D']\n"
        "DATABASES['default'].setdefault('CONN_MAX_AGE', 60)\n"  # not a variable
        "E = _helper(f'MODELHUB_{x}', 1)\n"  # not a constant name
    )
    assert settings_variables(source) == {"MODELHUB_A", "MODELHUB_B", "MODELHUB_C", "MODELHUB_D"}


def test_every_setting_is_listed_with_a_comment():
    set_, shown, lines = env_example()
    missing = sorted(settings_variables() - set(set_) - shown)
    assert missing == [], f".env.example does not list {missing} (modelhub/settings.py reads them)"
    for number, line in enumerate(lines):
        if line.lstrip("#").split("=")[0] in set_.keys() | shown and "=" in line:
            above = next(other for other in reversed(lines[:number]) if not other.lstrip("#").split("=")[0].isupper())
            assert above.startswith("# "), f".env.example line {number + 1} ({line!r}) has no comment above it"


def test_no_file_sets_a_variable_the_settings_do_not_read():
    known = settings_variables()
    set_, shown, _ = env_example()
    names = {("/.env.example", n) for n in set(set_) | shown}
    for obj in k8s_objects():
        if obj["kind"] in ("ConfigMap", "Secret"):
            data = obj.get("data", {}) | obj.get("stringData", {})
            names |= {(obj["metadata"]["name"], n) for n in data}
    ours = {(where, n) for where, n in names if n.startswith(OWN_PREFIXES)}
    unknown = sorted((where, n) for where, n in ours if not is_settings_variable(n, known))
    assert unknown == [], f"set but never read by modelhub/settings.py: {unknown}"


def test_its_values_pass_the_production_deploy_checks(tmp_path):
    set_, _, _ = env_example()
    theirs = (*OWN_PREFIXES, "DATABASE_URL", "CELERY_", "EMAIL_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(theirs)}
    env.update(set_)
    # Empty in the file, so that production refuses to start until one is chosen:
    assert set_["DJANGO_SECRET_KEY"] == ""
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    env["MODELHUB_VAR_DIR"] = str(tmp_path)
    env["DJANGO_SETTINGS_MODULE"] = "modelhub.settings"
    # `check --deploy` needs no database or broker connection: the hosts in the file need not exist here.
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
