"""A wrong environment variable stops the start, naming the variable."""

import json
import os
import re
import stat
import subprocess
import sys

import pytest
from django.core.management.utils import get_random_secret_key

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
        ("MODELHUB_ENV", "prod"),
        ("MODELHUB_LOG_FORMAT", "xml"),
        ("MODELHUB_HSTS_SECONDS", "a year"),
        ("MODELHUB_TRITON_ALLOWED_NETWORKS", "10.0.0.0/8,10.1.0.0/33"),
        ("MODELHUB_DISCOVERY_DNS_SERVER", "kube-dns:53"),  # an address, not a name: no resolver to find it
        ("MODELHUB_DISCOVERY_DNS_SERVER", "10.96.0.10:port"),
        ("MODELHUB_DISCOVERY_INTERVAL_S", "0"),
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


# --- production ---------------------------------------------------------------------------


def production(tmp_path, **extra) -> dict:
    return {
        "MODELHUB_ENV": "production",
        "DJANGO_SECRET_KEY": get_random_secret_key(),
        "DJANGO_ALLOWED_HOSTS": "modelhub.example.com",
        "MODELHUB_VAR_DIR": str(tmp_path),
        **extra,
    }


def run_manage(*args, **env_vars) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELHUB_", "DJANGO_"))}
    env.update(DJANGO_SETTINGS_MODULE="modelhub.settings", **env_vars)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=180
    )


def read_settings(*names, **env_vars) -> dict:
    """The named settings as a process started with `env_vars` (and no other MODELHUB_/DJANGO_ variable) sees them."""
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n, None) for n in {list(names)!r}}}, default=str))"
    )
    result = run_manage("shell", "-c", code, **env_vars)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_check_deploy_is_clean_in_production_and_not_without_it(tmp_path):
    clean = run_manage("check", "--deploy", "--fail-level", "WARNING", **production(tmp_path))
    assert clean.returncode == 0, clean.stderr
    assert "no issues" in clean.stdout

    local = run_manage("check", "--deploy", "--fail-level", "WARNING", MODELHUB_VAR_DIR=str(tmp_path))
    assert local.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):  # HSTS, https, cookies
        assert check in local.stderr


def test_production_turns_https_on_with_the_probes_exempt_from_the_redirect(tmp_path):
    seen = read_settings(
        "SECURE_SSL_REDIRECT", "SECURE_REDIRECT_EXEMPT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER",
        "ALLOWED_HOSTS", "LOG_FORMAT",
        **production(tmp_path, MODELHUB_HSTS_SECONDS="600", MODELHUB_TRUST_X_FORWARDED_PROTO="true"),
    )  # fmt: skip
    assert seen["SECURE_SSL_REDIRECT"] and seen["SESSION_COOKIE_SECURE"] and seen["CSRF_COOKIE_SECURE"]
    assert (seen["SECURE_HSTS_SECONDS"], seen["SECURE_HSTS_INCLUDE_SUBDOMAINS"], seen["SECURE_HSTS_PRELOAD"]) == (
        600,
        True,
        False,
    )
    assert seen["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert seen["ALLOWED_HOSTS"] == ["modelhub.example.com"] and seen["LOG_FORMAT"] == "json"
    exempt = [re.compile(p) for p in seen["SECURE_REDIRECT_EXEMPT"]]
    for path in ("healthz", "healthz/live", "healthz/ready", "metrics"):
        assert any(p.search(path) for p in exempt), path
    assert not any(p.search(path) for p in exempt for path in ("", "login/", "api/v1/models/", "metricsx"))


def test_the_local_default_keeps_plain_http_and_needs_nothing(tmp_path):
    seen = read_settings("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "LOG_FORMAT",
                         "SECURE_PROXY_SSL_HEADER", MODELHUB_VAR_DIR=str(tmp_path))  # fmt: skip
    assert seen == {
        "SECURE_SSL_REDIRECT": False,
        "SESSION_COOKIE_SECURE": False,
        "SECURE_HSTS_SECONDS": 0,
        "LOG_FORMAT": "plain",
        "SECURE_PROXY_SSL_HEADER": None,
    }


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"DJANGO_SECRET_KEY": ""}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_ALLOWED_HOSTS": ""}, "DJANGO_ALLOWED_HOSTS"),
        ({"DJANGO_DEBUG": "true"}, "DJANGO_DEBUG"),
    ],
)
def test_production_refuses_to_start_without_what_it_needs(tmp_path, missing, named):
    env = {k: v for k, v in {**production(tmp_path), **missing}.items() if v}
    result = run_manage("check", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and named in result.stderr.splitlines()[-1]


def test_the_local_secret_key_is_made_once_private_and_shared_by_processes_starting_together(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELHUB_", "DJANGO_"))}
    env.update(DJANGO_SETTINGS_MODULE="modelhub.settings", MODELHUB_VAR_DIR=str(tmp_path))
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    starts = [
        subprocess.Popen([sys.executable, "-c", code], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    keys = {start.communicate(timeout=180)[0].strip() for start in starts}

    key_file = tmp_path / "secret-key"
    assert keys == {key_file.read_text().strip()}
    assert len(next(iter(keys))) >= 50 and "insecure" not in next(iter(keys))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert read_settings("SECRET_KEY", MODELHUB_VAR_DIR=str(tmp_path))["SECRET_KEY"] in keys  # kept across starts
    assert not list(tmp_path.glob(".secret-key-*"))  # no partial file left behind
    other = tmp_path / "other"
    assert read_settings("SECRET_KEY", MODELHUB_VAR_DIR=str(other))["SECRET_KEY"] not in keys  # never a constant


def test_secrets_are_read_from_file_variables(tmp_path):
    (tmp_path / "key").write_text("k" * 60 + "\n")  # as `echo … > file` writes it
    (tmp_path / "db").write_text("postgres://app:pw@db.internal:5432/from_file\n")
    (tmp_path / "mail").write_text("smtp://mailer:pw@smtp.internal:2525")

    seen = read_settings(
        "SECRET_KEY", "DATABASES", "EMAIL_HOST", "EMAIL_PORT",
        **production(tmp_path, DJANGO_SECRET_KEY="", DJANGO_SECRET_KEY_FILE=str(tmp_path / "key"),
                     DATABASE_URL="", DATABASE_URL_FILE=str(tmp_path / "db"),  # set empty: as unset
                     EMAIL_URL="", EMAIL_URL_FILE=str(tmp_path / "mail")),
    )  # fmt: skip

    assert seen["SECRET_KEY"] == "k" * 60
    dollar = "$" + "k" * 59  # django-environ would read "$k…" as another variable's name
    assert read_settings("SECRET_KEY", **production(tmp_path, DJANGO_SECRET_KEY=dollar))["SECRET_KEY"] == dollar
    db = seen["DATABASES"]["default"]
    assert (db["NAME"], db["HOST"], db["PASSWORD"]) == ("from_file", "db.internal", "pw")
    assert (seen["EMAIL_HOST"], seen["EMAIL_PORT"]) == ("smtp.internal", 2525)


def test_a_variable_and_its_file_both_set_or_an_unreadable_file_stop_the_start(tmp_path):
    (tmp_path / "broker").write_text("redis://redis:6379/0")
    both = run_manage(
        "check", CELERY_BROKER_URL="redis://other:6379/0", CELERY_BROKER_URL_FILE=str(tmp_path / "broker"),
        MODELHUB_VAR_DIR=str(tmp_path),
    )  # fmt: skip
    assert both.returncode != 0
    assert "both CELERY_BROKER_URL and CELERY_BROKER_URL_FILE are set" in both.stderr.splitlines()[-1]

    missing = run_manage("check", DJANGO_SECRET_KEY_FILE=str(tmp_path / "nope"), MODELHUB_VAR_DIR=str(tmp_path))
    assert missing.returncode != 0
    last = missing.stderr.splitlines()[-1]
    assert "DJANGO_SECRET_KEY_FILE" in last and str(tmp_path / "nope") in last
