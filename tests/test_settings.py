"""A wrong environment variable stops the start, naming the variable."""

import os
import subprocess
import sys

import pytest

from modelhub.settings import BASE_DIR


def start_with(**env_vars) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "modelhub.settings", **env_vars}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysqlx://nobody@nowhere/db"),
        ("CELERY_BROKER_URL", "kafka://broker:9092"),
        ("EMAIL_URL", "pigeon://coop"),
        ("DJANGO_DEBUG", "perhaps"),
        ("MODELHUB_TRITON_TIMEOUT_S", "five"),
        ("MODELHUB_MAX_ARTIFACT_BYTES", "1GB"),
    ],
)
def test_a_wrong_value_stops_the_start_naming_the_variable(name, value, tmp_path):
    result = start_with(**{name: value, "MODELHUB_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.splitlines()[-1]


def test_the_embedded_default_needs_no_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "EMAIL_URL"}}
    env.update(MODELHUB_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="modelhub.settings")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings as s; "
         "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.EMAIL_BACKEND)"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "filesystem://",
        "django.core.mail.backends.console.EmailBackend",
    ]
