"""ModelHub settings, read from environment variables.

With nothing set, ModelHub runs on a fresh machine with no external service:
a SQLite file, Celery over kombu's filesystem transport, console email and
the local Triton that `scripts/run` starts. Production sets DATABASE_URL,
CELERY_BROKER_URL, EMAIL_URL and registers remote Triton servers.

A value that cannot be used stops the start with ImproperlyConfigured naming
the variable: a silently ignored typo is worse than a refusal to start.
"""

import contextlib
import importlib.util
import ipaddress
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent


class _SecretFiles(environ.FileAwareMapping):
    """The environment, where X_FILE=/run/secrets/x stands for X (Docker and Kubernetes secrets).

    Every variable read through `env` may come from a file this way, so secrets (the secret
    key, DATABASE_URL, EMAIL_URL, the broker URL, tokens) need not sit in the environment,
    where `ps e` and crash reports show them. The file's trailing newline is not part of the
    value (`echo secret > file` writes one).
    """

    def __getitem__(self, key):
        path = self.env.get(key + "_FILE")
        if not path:
            return self.env[key]
        if self.env.get(key):  # set empty counts as unset
            raise ImproperlyConfigured(f"both {key} and {key}_FILE are set: set only one of them")
        try:
            return super().__getitem__(key).rstrip("\r\n")
        except OSError as exc:
            raise ImproperlyConfigured(f"{key}_FILE={path!r} cannot be read: {exc.strerror or exc}") from exc


env = environ.Env()
env.ENVIRON = _SecretFiles()


def _read(name: str, reader, default):
    """Read one variable, turning any parse failure into an error naming it."""
    try:
        return reader(name, default=default)
    except ImproperlyConfigured:
        raise
    except Exception as exc:  # environ raises ValueError, KeyError, … by type
        raise ImproperlyConfigured(f"{name}={env.str(name, default='')!r} is not valid: {exc}") from exc


def _secret(name: str, default: str = "") -> str:
    # Not env.str: django-environ reads a value that starts with "$" as the name of another
    # variable to use instead, so a random key like "$k9…" would silently become "".
    return env.ENVIRON.get(name) or default


def _strict_bool(name: str, default: bool) -> bool:
    # environ's bool() reads any unknown word as False; a typo must not silently disable something.
    raw = env.str(name, default="")
    if raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use true/false, 1/0, yes/no or on/off")


def _url_with_scheme(name: str, default: str, schemes: set[str]) -> str:
    value = _read(name, env.str, default)
    scheme = urlsplit(value).scheme
    if scheme not in schemes:
        raise ImproperlyConfigured(f"{name}={value!r}: scheme {scheme!r} is not one of {', '.join(sorted(schemes))}")
    return value


VAR_DIR = Path(_read("MODELHUB_VAR_DIR", env.str, str(BASE_DIR / "var")))

# --- Production -------------------------------------------------------------
# One switch: MODELHUB_ENV=production requires a secret key and allowed hosts, turns HTTPS
# on (secure cookies, HSTS, redirect to https) and logs JSON lines. Unset ("local"), the
# demo runs as before on plain http://127.0.0.1 with nothing to configure.
MODELHUB_ENV = _read("MODELHUB_ENV", env.str, "local")
if MODELHUB_ENV not in ("local", "production"):
    raise ImproperlyConfigured(f"MODELHUB_ENV={MODELHUB_ENV!r} must be 'local' or 'production'")
PRODUCTION = MODELHUB_ENV == "production"
DEBUG = _strict_bool("DJANGO_DEBUG", False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DJANGO_DEBUG=true with MODELHUB_ENV=production: debug pages show settings and code")


def _local_secret_key(path: Path) -> str:
    """The local run's key: made once, kept in the var folder (0600), the same for every
    process (web, workers, gateway), so sessions survive restarts. Never a constant in the
    code, which anyone could use to forge a session cookie."""
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(dir=path.parent, prefix=".secret-key-")  # mode 0600
            try:
                with os.fdopen(fd, "w") as file:
                    file.write(get_random_secret_key())
                # A link, not a rename: of processes starting at once, the first one's key stays.
                with contextlib.suppress(FileExistsError):
                    os.link(partial, path)
            finally:
                os.unlink(partial)
        key = path.read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"DJANGO_SECRET_KEY is not set and the local key {path} cannot be made or read ({exc}): set the variable"
        ) from exc
    if len(key) < 50:
        raise ImproperlyConfigured(f"the local secret key in {path} is too short: delete the file to make a new one")
    return key


SECRET_KEY = _secret("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    # MODELHUB_REQUIRE_SECRET_KEY: the older switch, kept for set-ups that use it.
    if PRODUCTION or _strict_bool("MODELHUB_REQUIRE_SECRET_KEY", False):
        raise ImproperlyConfigured("DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set in production")
    SECRET_KEY = _local_secret_key(VAR_DIR / "secret-key")
ALLOWED_HOSTS = _read(
    "DJANGO_ALLOWED_HOSTS", env.list, [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"]
)
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must be set in production: the host names ModelHub is reached at")
CSRF_TRUSTED_ORIGINS = _read("DJANGO_CSRF_TRUSTED_ORIGINS", env.list, [])

# HTTPS: on in production. Behind a proxy or load balancer that ends TLS, set
# MODELHUB_TRUST_X_FORWARDED_PROTO=true (only if that proxy sets the header on every
# request): without it every request looks like plain http and is redirected for ever.
HTTPS = _strict_bool("MODELHUB_HTTPS", PRODUCTION)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS and _strict_bool("MODELHUB_SSL_REDIRECT", True)
# Probes and Prometheus speak plain http inside the cluster (paths without the leading /).
SECURE_REDIRECT_EXEMPT = [r"^healthz(/|$)", r"^metrics$"]
_hsts_seconds = _read("MODELHUB_HSTS_SECONDS", env.int, 365 * 24 * 3600)  # read (and checked) even when off
SECURE_HSTS_SECONDS = _hsts_seconds if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = _strict_bool("MODELHUB_HSTS_INCLUDE_SUBDOMAINS", True)
# Preloading is a promise to browsers that is slow to take back: opt in only.
SECURE_HSTS_PRELOAD = _strict_bool("MODELHUB_HSTS_PRELOAD", False)
if _strict_bool("MODELHUB_TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if _hsts_seconds < 0:
    raise ImproperlyConfigured(f"MODELHUB_HSTS_SECONDS={_hsts_seconds} must be at least 0")
# check --deploy warns about no preload (W021); that choice is made above, on purpose.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "modelhub.audit",
    "modelhub.registry",
    "modelhub.serving",
    "modelhub.monitoring",
    "modelhub.alerts",
    "modelhub.api",
    "modelhub.ui",
    "modelhub.ops",
]
# The demo (sample models, load_demo, ensure_admin) is development tooling: the production
# image leaves its package out (.dockerignore), and the settings then go on without it.
if importlib.util.find_spec("modelhub.demo") is not None:
    INSTALLED_APPS.append("modelhub.demo")

MIDDLEWARE = [
    # First: every log line of a request carries its id, and every answer is counted.
    "modelhub.ops.middleware.RequestIdMiddleware",
    "modelhub.ops.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "modelhub.middleware.RefuseNulInPathMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "modelhub.urls"
WSGI_APPLICATION = "modelhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "modelhub.ui.context.ui",
            ],
        },
    },
]

_DB_SCHEMES = {"sqlite", "postgres", "postgresql", "pgsql", "psql"}
DATABASES = {
    "default": environ.Env.db_url_config(
        _url_with_scheme("DATABASE_URL", f"sqlite:///{VAR_DIR / 'modelhub.sqlite3'}", _DB_SCHEMES)
    )
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
# A kept connection is checked before each request or task reuses it: after a database
# restart the first request opens a new connection instead of failing with a stale one.
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
# SQLite (the default run) serves concurrent writers when: readers never block the writer
# (WAL), a writer waits for the lock instead of failing at once (timeout, in seconds), and a
# transaction takes the write lock when it begins (IMMEDIATE). A deferred transaction that
# reads and then writes cannot wait: SQLite fails it at once with "database is locked".
SQLITE_BUSY_TIMEOUT_S = _read("MODELHUB_SQLITE_BUSY_TIMEOUT_S", env.float, 20.0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
            "transaction_mode": "IMMEDIATE",
            "timeout": SQLITE_BUSY_TIMEOUT_S,
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "modelhub.ui.staticfinders.PlotlyFinder",  # vendor/plotly.min.js from the plotly package
]
# collectstatic's output, served by WhiteNoise; the production image collects into its own
# read-only folder at build time (docker/Dockerfile), outside the var volume.
STATIC_ROOT = Path(_read("MODELHUB_STATIC_ROOT", env.str, str(VAR_DIR / "staticfiles")))

# Artifacts go through Django's storage API; a local folder by default.
MEDIA_ROOT = Path(_read("MODELHUB_ARTIFACT_ROOT", env.str, str(VAR_DIR / "artifacts")))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Or an S3-compatible bucket (AWS, MinIO, Ceph, …), streamed both ways: modelhub/registry/storage.py.
ARTIFACT_STORAGE = _read("MODELHUB_ARTIFACT_STORAGE", env.str, "filesystem")
if ARTIFACT_STORAGE == "s3":
    _s3_bucket = _read("MODELHUB_S3_BUCKET", env.str, "")
    if not _s3_bucket:
        raise ImproperlyConfigured("MODELHUB_S3_BUCKET must be set with MODELHUB_ARTIFACT_STORAGE=s3")
    _s3_addressing = _read("MODELHUB_S3_ADDRESSING_STYLE", env.str, "auto")
    if _s3_addressing not in ("auto", "path", "virtual"):
        raise ImproperlyConfigured(f"MODELHUB_S3_ADDRESSING_STYLE={_s3_addressing!r} must be auto, path or virtual")
    _s3_endpoint = _read("MODELHUB_S3_ENDPOINT_URL", env.str, "")
    STORAGES["default"] = {
        "BACKEND": "modelhub.registry.storage.ArtifactS3Storage",
        "OPTIONS": {
            "bucket_name": _s3_bucket,
            # Empty: AWS itself (the region's endpoint).
            "endpoint_url": _s3_endpoint and _url_with_scheme("MODELHUB_S3_ENDPOINT_URL", "", {"http", "https"}),
            "region_name": _read("MODELHUB_S3_REGION", env.str, "") or None,
            # Empty: boto3's own chain (AWS_ACCESS_KEY_ID, an instance or pod role, …).
            "access_key": _read("MODELHUB_S3_ACCESS_KEY_ID", env.str, "") or None,
            "secret_key": _read("MODELHUB_S3_SECRET_ACCESS_KEY", env.str, "") or None,
            "addressing_style": None if _s3_addressing == "auto" else _s3_addressing,
            "location": _read("MODELHUB_S3_PREFIX", env.str, "").strip("/"),
            # As on disk: a name taken gets another (a concurrent upload's cleanup must not
            # delete the object a committed version points at).
            "file_overwrite": False,
            "connect_timeout": _read("MODELHUB_S3_CONNECT_TIMEOUT_S", env.float, 5.0),
        },
    }
elif ARTIFACT_STORAGE != "filesystem":
    raise ImproperlyConfigured(f"MODELHUB_ARTIFACT_STORAGE={ARTIFACT_STORAGE!r} must be filesystem or s3")
# Uploads larger than this spill to a temporary file, so the web process never
# holds an artifact in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Beside the artifacts, on the same disk: storing an upload is then a rename, not a copy.
FILE_UPLOAD_TEMP_DIR = Path(_read("MODELHUB_UPLOAD_TEMP_DIR", env.str, str(MEDIA_ROOT.parent / "uploads")))
FILE_UPLOAD_TEMP_DIR.mkdir(parents=True, exist_ok=True)
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- Email ------------------------------------------------------------------
_EMAIL_SCHEMES = {"consolemail", "smtp", "smtps", "smtp+tls", "smtp+ssl", "dummymail", "filemail", "memorymail"}
vars().update(environ.Env.email_url_config(_url_with_scheme("EMAIL_URL", "consolemail://", _EMAIL_SCHEMES)))
DEFAULT_FROM_EMAIL = _read("DEFAULT_FROM_EMAIL", env.str, "modelhub@localhost")

# --- Alerts -----------------------------------------------------------------
# Links in alert emails are absolute: the address people reach ModelHub at.
MODELHUB_BASE_URL = _url_with_scheme("MODELHUB_BASE_URL", "http://127.0.0.1:8000", {"http", "https"})
# Told about every alert, besides each rule's owners, addresses and groups (e.g. an on-call list).
ALERT_EMAILS = _read("MODELHUB_ALERT_EMAILS", env.list, [])
# A failed send is tried again after ALERT_RETRY_BACKOFF_S, doubling, up to ALERT_MAX_ATTEMPTS in all.
ALERT_MAX_ATTEMPTS = _read("MODELHUB_ALERT_MAX_ATTEMPTS", env.int, 5)
ALERT_RETRY_BACKOFF_S = _read("MODELHUB_ALERT_RETRY_BACKOFF_S", env.float, 30.0)
# How often modelhub.alerts.tasks.send_notifications runs (retries, reminders, held flips).
ALERT_SEND_INTERVAL_S = _read("MODELHUB_ALERT_SEND_INTERVAL_S", env.float, 10.0)
if ALERT_MAX_ATTEMPTS < 1:
    raise ImproperlyConfigured(f"MODELHUB_ALERT_MAX_ATTEMPTS={ALERT_MAX_ATTEMPTS} must be at least 1")

# --- Celery -----------------------------------------------------------------
_BROKER_SCHEMES = {"filesystem", "redis", "rediss", "amqp", "amqps", "pyamqp", "memory"}
CELERY_BROKER_URL = _url_with_scheme("CELERY_BROKER_URL", "filesystem://", _BROKER_SCHEMES)
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    _broker_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(_broker_dir / "control"),
    }
    # kombu's own writes a message in place, and a worker can read it half-written.
    CELERY_BROKER_TRANSPORT = "modelhub.filesystem_broker:Transport"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_TIME_LIMIT = 15 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 14 * 60
CELERY_TASK_ALWAYS_EAGER = _strict_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The interval the reconcile schedule gets when it is first created; after that the
# schedule is a row to edit in the admin (modelhub/monitoring/schedules.py).
RECONCILE_INTERVAL_S = _read("MODELHUB_RECONCILE_INTERVAL_S", env.float, 30.0)
# Empty on purpose: the DatabaseScheduler writes these entries over the PeriodicTask rows
# at every beat start, which would undo an admin's edit. Schedules are rows, created
# when missing by modelhub.monitoring.schedules.ensure_schedules (after each migrate).
CELERY_BEAT_SCHEDULE: dict = {}
# Queues: each kind of work has its own, so a long load or an accuracy run never sits
# in front of a health check. The first matching pattern wins; anything else goes to
# the default queue "celery". Every worker command consumes all of TASK_QUEUE_NAMES
# (scripts/run, docker/, tests/serving/test_worker.py).
CELERY_TASK_ROUTES = {
    "modelhub.serving.discovery_tasks.*": {"queue": "checks"},  # a DNS lookup: never behind a long load
    "modelhub.serving.*": {"queue": "reconcile"},
    "modelhub.monitoring.accuracy_tasks.*": {"queue": "accuracy"},
    "modelhub.monitoring.drift_tasks.*": {"queue": "accuracy"},  # long reads, like accuracy runs
    "modelhub.monitoring.*": {"queue": "checks"},
    "modelhub.alerts.*": {"queue": "notify"},
}
TASK_QUEUE_NAMES = ["celery", "reconcile", "checks", "notify", "accuracy"]
# (soft, hard) seconds for the tasks of a queue that set no limit of their own
# (modelhub.celery.QueueTimeLimits); other tasks get CELERY_TASK_(SOFT_)TIME_LIMIT.
TASK_TIME_LIMITS_BY_QUEUE = {
    "reconcile": (14 * 60, 15 * 60),  # loads of large models (MODELHUB_TRITON_LOAD_TIMEOUT_S each)
    "checks": (50, 60),  # a pass costs one call timeout per server, never minutes
    "notify": (100, 120),  # SMTP has its own timeouts; a stuck send must not hold the queue
    "accuracy": (28 * 60, 30 * 60),  # a whole evaluation set through Triton
}
CELERY_TASK_ANNOTATIONS = ["modelhub.celery.QueueTimeLimits"]
# One message at a time per worker process: a process busy with a long task does not
# hold short ones it prefetched (workers also run with -O fair).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A broker that is down (Redis restarting) is waited for, at start and while running, for
# as long as it takes: a worker that gave up after 100 tries would stay down after the outage.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None

# --- Triton -----------------------------------------------------------------
# Every Triton call has a timeout: a load can hang forever (shared/TRITON.md).
TRITON_TIMEOUT_S = _read("MODELHUB_TRITON_TIMEOUT_S", env.float, 5.0)
TRITON_LOAD_TIMEOUT_S = _read("MODELHUB_TRITON_LOAD_TIMEOUT_S", env.float, 120.0)
# Files one load may carry inside its request (streamed, so memory stays flat;
# Triton itself decodes the base64 slowly). Larger models belong in a model
# repository the Triton server reads itself.
MAX_LOAD_BYTES = _read("MODELHUB_MAX_LOAD_BYTES", env.int, 8 * 1024**3)
# After a failed load, the reconciler waits this long before trying again.
DEPLOY_RETRY_AFTER_S = _read("MODELHUB_DEPLOY_RETRY_AFTER_S", env.float, 300.0)
# Networks (CIDRs) Triton and metrics URLs may reach, checked at each connection against
# every address the host resolves to: a server URL can then not be aimed at the cloud's
# metadata service or an internal admin port. Empty (the default): any address.
TRITON_ALLOWED_NETWORKS = []
for _cidr in _read("MODELHUB_TRITON_ALLOWED_NETWORKS", env.list, []):
    try:
        TRITON_ALLOWED_NETWORKS.append(ipaddress.ip_network(_cidr.strip(), strict=False))
    except ValueError as exc:
        raise ImproperlyConfigured(f"MODELHUB_TRITON_ALLOWED_NETWORKS: {_cidr!r} is not a network: {exc}") from exc

# --- Server discovery (modelhub.serving.discovery: a DNS name standing for several servers) ---
# How often beat looks for server groups due to be resolved again (each group has its own interval).
DISCOVERY_INTERVAL_S = _read("MODELHUB_DISCOVERY_INTERVAL_S", env.float, 10.0)
# One resolution waits at most this long (with MODELHUB_DISCOVERY_DNS_SERVER; the system
# resolver keeps its own timeouts).
DISCOVERY_TIMEOUT_S = _read("MODELHUB_DISCOVERY_TIMEOUT_S", env.float, 5.0)
for _name, _value in (
    ("MODELHUB_DISCOVERY_INTERVAL_S", DISCOVERY_INTERVAL_S),
    ("MODELHUB_DISCOVERY_TIMEOUT_S", DISCOVERY_TIMEOUT_S),
):
    if _value < 1:
        raise ImproperlyConfigured(f"{_name}={_value} must be at least 1 (seconds)")


def _dns_server(name: str) -> tuple[str, int] | None:
    """ "10.96.0.10", "10.96.0.10:53" or "[fd00::a]:53" as (address, port); None when unset."""
    raw = _read(name, env.str, "").strip()
    if not raw:
        return None
    try:
        parts = urlsplit(f"//{raw}")
        address, port = parts.hostname, parts.port or 53
        ipaddress.ip_address(address or "")
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not an IP address with an optional port "
            f"(10.96.0.10, 10.96.0.10:53, [fd00::a]:53): {exc}"
        ) from None
    return address, port


# A DNS server to ask instead of the system's resolver (getaddrinfo); unset in production,
# where the system resolver is the cluster's DNS.
DISCOVERY_DNS_SERVER = _dns_server("MODELHUB_DISCOVERY_DNS_SERVER")

# --- Inference gateway (modelhub.gateway: Triton's protocol in front of the servers) ---
GATEWAY_PORT = _read("MODELHUB_GATEWAY_PORT", env.int, 8001)
# "token": a Bearer API token with the infer scope; "open": anyone on the network may infer.
GATEWAY_AUTH = _read("MODELHUB_GATEWAY_AUTH", env.str, "token")
if GATEWAY_AUTH not in ("token", "open"):
    raise ImproperlyConfigured(f"MODELHUB_GATEWAY_AUTH={GATEWAY_AUTH!r} must be 'token' or 'open'")
# One upstream exchange (connect, send, Triton's whole answer); past it the client gets 504.
GATEWAY_TIMEOUT_S = _read("MODELHUB_GATEWAY_TIMEOUT_S", env.float, 30.0)
# How often the routing table and token cache are re-read (a change shows within this).
GATEWAY_REFRESH_S = _read("MODELHUB_GATEWAY_REFRESH_S", env.float, 1.0)
# The alias a model name without a version goes to.
GATEWAY_ALIAS = _read("MODELHUB_GATEWAY_ALIAS", env.str, "production")
# Sampling for drift monitoring: the share of requests kept (0 = off), the in-memory
# buffer's bound (past it samples are dropped and counted) and the batch handed to the sink.
GATEWAY_SAMPLE_RATE = _read("MODELHUB_GATEWAY_SAMPLE_RATE", env.float, 0.0)
GATEWAY_SAMPLE_BUFFER = _read("MODELHUB_GATEWAY_SAMPLE_BUFFER", env.int, 10_000)
GATEWAY_SAMPLE_BATCH = _read("MODELHUB_GATEWAY_SAMPLE_BATCH", env.int, 500)
# The largest request body the gateway reads (it holds one whole request in memory); past it, 413.
GATEWAY_MAX_BODY_BYTES = _read("MODELHUB_GATEWAY_MAX_BODY_BYTES", env.int, 256 * 1024**2)
for _name, _value, _low, _high in (
    ("MODELHUB_GATEWAY_TIMEOUT_S", GATEWAY_TIMEOUT_S, 0.01, None),
    ("MODELHUB_GATEWAY_REFRESH_S", GATEWAY_REFRESH_S, 0.05, None),
    ("MODELHUB_GATEWAY_SAMPLE_RATE", GATEWAY_SAMPLE_RATE, 0.0, 1.0),
    ("MODELHUB_GATEWAY_SAMPLE_BUFFER", GATEWAY_SAMPLE_BUFFER, 1, None),
    ("MODELHUB_GATEWAY_SAMPLE_BATCH", GATEWAY_SAMPLE_BATCH, 1, None),
    ("MODELHUB_GATEWAY_MAX_BODY_BYTES", GATEWAY_MAX_BODY_BYTES, 1, None),
):
    if _value < _low or (_high is not None and _value > _high):
        raise ImproperlyConfigured(f"{_name}={_value} must be between {_low} and {_high or 'any'}")

# --- Monitoring ---------------------------------------------------------------
# How often each check pass runs (seconds). The schedules themselves live in the
# database (django-celery-beat); these are the intervals they are created with,
# and each pass task's time limit stays below its interval.
MONITORING_HEALTH_INTERVAL_S = _read("MODELHUB_MONITORING_HEALTH_INTERVAL_S", env.float, 30.0)
MONITORING_MODEL_CHECKS_INTERVAL_S = _read("MODELHUB_MONITORING_MODEL_CHECKS_INTERVAL_S", env.float, 60.0)
MONITORING_LATENCY_INTERVAL_S = _read("MODELHUB_MONITORING_LATENCY_INTERVAL_S", env.float, 60.0)
MONITORING_STATS_INTERVAL_S = _read("MODELHUB_MONITORING_STATS_INTERVAL_S", env.float, 60.0)
MONITORING_METRICS_INTERVAL_S = _read("MODELHUB_MONITORING_METRICS_INTERVAL_S", env.float, 30.0)
# Each Triton call of a check waits at most this long: a dead server costs this, once per pass.
MONITORING_CALL_TIMEOUT_S = _read("MODELHUB_MONITORING_CALL_TIMEOUT_S", env.float, 5.0)
# Calls a pass makes at once (threads), across all servers and deployments.
MONITORING_PARALLEL_CALLS = _read("MODELHUB_MONITORING_PARALLEL_CALLS", env.int, 32)
# Requests of one latency probe (p50/p95/p99 are computed from them).
LATENCY_PROBE_REQUESTS = _read("MODELHUB_LATENCY_PROBE_REQUESTS", env.int, 20)
# Memory around loads: the sample after a load/unload is taken this much later
# (Triton refreshes its CPU/GPU metrics every 2 s by default), and an unload that
# gives back less than (1 - tolerance) of what the load took is flagged.
MONITORING_MEMORY_SETTLE_S = _read("MODELHUB_MONITORING_MEMORY_SETTLE_S", env.float, 2.5)
MONITORING_MEMORY_TOLERANCE = _read("MODELHUB_MONITORING_MEMORY_TOLERANCE", env.float, 0.2)
for _name in ("HEALTH", "MODEL_CHECKS", "LATENCY", "STATS", "METRICS"):
    if vars()[f"MONITORING_{_name}_INTERVAL_S"] < 5:
        raise ImproperlyConfigured(f"MODELHUB_MONITORING_{_name}_INTERVAL_S must be at least 5 (seconds)")
for _name, _value, _least in (
    ("MODELHUB_MONITORING_CALL_TIMEOUT_S", MONITORING_CALL_TIMEOUT_S, 0.1),
    ("MODELHUB_MONITORING_PARALLEL_CALLS", MONITORING_PARALLEL_CALLS, 1),
    ("MODELHUB_LATENCY_PROBE_REQUESTS", LATENCY_PROBE_REQUESTS, 1),
):
    if _value < _least:
        raise ImproperlyConfigured(f"{_name}={_value} must be at least {_least}")

# --- Accuracy ---------------------------------------------------------------
# A loaded version's accuracy is measured again when its last result is older than this
# (seconds), and at once when it has none (the accuracy_pass schedule runs more often).
MONITORING_ACCURACY_INTERVAL_S = _read("MODELHUB_MONITORING_ACCURACY_INTERVAL_S", env.float, 24 * 3600.0)
# One accuracy run (the whole set through Triton) stops and fails past this many seconds;
# the run an API call waits for gets the second, shorter bound.
ACCURACY_RUN_TIMEOUT_S = _read("MODELHUB_ACCURACY_RUN_TIMEOUT_S", env.float, 20 * 60.0)
ACCURACY_API_TIMEOUT_S = _read("MODELHUB_ACCURACY_API_TIMEOUT_S", env.float, 120.0)
# Evaluation sets: upload size, rows, and (for .npz, a zip) the size the arrays unpack to.
MAX_EVALUATION_BYTES = _read("MODELHUB_MAX_EVALUATION_BYTES", env.int, 512 * 1024**2)
MAX_EVALUATION_ROWS = _read("MODELHUB_MAX_EVALUATION_ROWS", env.int, 1_000_000)
MAX_EVALUATION_UNPACKED_BYTES = _read("MODELHUB_MAX_EVALUATION_UNPACKED_BYTES", env.int, 2 * 1024**3)
for _name, _value, _least in (
    ("MODELHUB_MONITORING_ACCURACY_INTERVAL_S", MONITORING_ACCURACY_INTERVAL_S, 60),
    ("MODELHUB_ACCURACY_RUN_TIMEOUT_S", ACCURACY_RUN_TIMEOUT_S, 1),
    ("MODELHUB_ACCURACY_API_TIMEOUT_S", ACCURACY_API_TIMEOUT_S, 1),
    ("MODELHUB_MAX_EVALUATION_BYTES", MAX_EVALUATION_BYTES, 1),
    ("MODELHUB_MAX_EVALUATION_ROWS", MAX_EVALUATION_ROWS, 1),
    ("MODELHUB_MAX_EVALUATION_UNPACKED_BYTES", MAX_EVALUATION_UNPACKED_BYTES, 1),
):
    if _value < _least:
        raise ImproperlyConfigured(f"{_name}={_value} must be at least {_least}")

# --- Uploads ----------------------------------------------------------------
MAX_ARTIFACT_BYTES = _read("MODELHUB_MAX_ARTIFACT_BYTES", env.int, 4 * 1024**3)
MAX_ARCHIVE_ENTRIES = _read("MODELHUB_MAX_ARCHIVE_ENTRIES", env.int, 10_000)
# Unpacked size of an archive, in proportion to the artifact cap: model weights
# barely compress, so twice is room enough. (Small zip bombs, 2 MB of 2 GiB, are
# stopped by the compression ratio below, which a size cap alone cannot do.)
MAX_UNPACKED_BYTES = _read("MODELHUB_MAX_UNPACKED_BYTES", env.int, 2 * MAX_ARTIFACT_BYTES)
# Unpacked bytes per packed byte (weights: ~1.1, zip bombs: 1000+); archives that
# unpack to at most the floor are exempt, as small text-like folders compress well.
MAX_COMPRESSION_RATIO = _read("MODELHUB_MAX_COMPRESSION_RATIO", env.float, 100.0)
COMPRESSION_RATIO_FLOOR_BYTES = _read("MODELHUB_COMPRESSION_RATIO_FLOOR_BYTES", env.int, 64 * 1024**2)
if MAX_COMPRESSION_RATIO < 1:
    raise ImproperlyConfigured(f"MODELHUB_MAX_COMPRESSION_RATIO={MAX_COMPRESSION_RATIO} must be at least 1")

# --- Retention --------------------------------------------------------------
# Deployment transitions and audit events only grow. Days to keep each; unset (the
# default) keeps them for ever. modelhub.serving.retention deletes older rows in batches.


def _retention_days(name: str) -> int | None:
    days = _read(name, env.int, None)
    if days is not None and days < 1:
        raise ImproperlyConfigured(f"{name}={days} must be at least 1 (days), or unset to keep rows for ever")
    return days


RETENTION_DAYS_TRANSITIONS = _retention_days("MODELHUB_RETENTION_DAYS_TRANSITIONS")
RETENTION_DAYS_AUDIT = _retention_days("MODELHUB_RETENTION_DAYS_AUDIT")
RETENTION_BATCH_SIZE = 1000
# The task is not in a tasks.py module, where autodiscovery would find it.
CELERY_IMPORTS = [
    "modelhub.serving.retention",
    "modelhub.serving.discovery_tasks",
    "modelhub.monitoring.accuracy_tasks",
    "modelhub.monitoring.drift_tasks",
]
# Scheduled hourly (the expire-old-rows PeriodicTask, modelhub/monitoring/schedules.py).

# --- Time series ------------------------------------------------------------
# How long check points are kept: raw points (hours), per-minute and per-hour roll-ups
# and check results (days). modelhub.monitoring.maintenance rolls points up and then
# deletes older rows in batches, never a raw point or minute roll-up not rolled up yet.
MONITORING_RAW_RETENTION_HOURS = _read("MODELHUB_MONITORING_RAW_RETENTION_HOURS", env.int, 48)
MONITORING_MINUTE_RETENTION_DAYS = _read("MODELHUB_MONITORING_MINUTE_RETENTION_DAYS", env.int, 14)
MONITORING_HOUR_RETENTION_DAYS = _read("MODELHUB_MONITORING_HOUR_RETENTION_DAYS", env.int, 400)
MONITORING_RESULT_RETENTION_DAYS = _read("MODELHUB_MONITORING_RESULT_RETENTION_DAYS", env.int, 30)
# Sampled requests and prediction logs (drift, live accuracy): kept this long, then deleted.
MONITORING_SAMPLE_RETENTION_DAYS = _read("MODELHUB_MONITORING_SAMPLE_RETENTION_DAYS", env.int, 7)
# Drift is computed per window of this many seconds, per version with samples in it.
DRIFT_WINDOW_S = _read("MODELHUB_DRIFT_WINDOW_S", env.int, 3600)
# A feature drifted when its PSI is above this (the share of drifted features counts these).
DRIFT_PSI_THRESHOLD = _read("MODELHUB_DRIFT_PSI_THRESHOLD", env.float, 0.2)
# Raw points: two hours at least, since a chart reads the hour the roll-ups are filling from them.
for _name, _value, _least in (
    ("MODELHUB_MONITORING_RAW_RETENTION_HOURS", MONITORING_RAW_RETENTION_HOURS, 2),
    ("MODELHUB_MONITORING_MINUTE_RETENTION_DAYS", MONITORING_MINUTE_RETENTION_DAYS, 1),
    ("MODELHUB_MONITORING_HOUR_RETENTION_DAYS", MONITORING_HOUR_RETENTION_DAYS, 1),
    ("MODELHUB_MONITORING_RESULT_RETENTION_DAYS", MONITORING_RESULT_RETENTION_DAYS, 1),
):
    if _value < _least:
        raise ImproperlyConfigured(f"{_name}={_value} must be at least {_least}")
CELERY_IMPORTS.append("modelhub.monitoring.maintenance")

# --- REST API ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "modelhub.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "modelhub.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ModelHub API",
    "DESCRIPTION": "Register, deploy and promote models served by NVIDIA Triton.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Deployments and their transitions share one set of states: one enum in the schema.
    "ENUM_NAME_OVERRIDES": {
        "ObservedStateEnum": "modelhub.serving.models.ObservedState",
        "CheckStatusEnum": "modelhub.monitoring.models.Status",
        "AlertStateEnum": "modelhub.alerts.models.AlertState",
    },
}

# Everyone signs in on ModelHub's own page (the admin's refuses non-staff people).
LOGIN_URL = "ui:login"
LOGIN_REDIRECT_URL = "ui:overview"
LOGOUT_REDIRECT_URL = "ui:login"

# --- Operations: logs, /metrics, /healthz/live, /healthz/ready (modelhub.ops) ----------
# Logs go to stdout: JSON lines in production (time, level, logger, message, exception,
# request_id), plain text locally.
LOG_FORMAT = _read("MODELHUB_LOG_FORMAT", env.str, "json" if PRODUCTION else "plain")
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured(f"MODELHUB_LOG_FORMAT={LOG_FORMAT!r} must be 'json' or 'plain'")
# /metrics is open (it shows counts and names of views and queues, nothing secret) unless
# this is set: then Prometheus sends it as a Bearer token (bearer_token_file).
METRICS_TOKEN = _secret("MODELHUB_METRICS_TOKEN")
# How long /healthz/ready waits for the database and the broker, each.
READY_TIMEOUT_S = _read("MODELHUB_READY_TIMEOUT_S", env.float, 2.0)
# A Celery worker serves its own counters (reconciler actions, checks) at this port's /metrics
# when set: for workers that share no PROMETHEUS_MULTIPROC_DIR with a web process.
WORKER_METRICS_PORT = _read("MODELHUB_WORKER_METRICS_PORT", env.int, None)
WORKER_METRICS_HOST = _read("MODELHUB_WORKER_METRICS_HOST", env.str, "0.0.0.0")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "modelhub.lib.jsonlog.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": _read("MODELHUB_LOG_LEVEL", env.str, "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # The filesystem broker has no host; kombu warns about that on every connect.
        "kombu.connection": {"level": "ERROR"},
    },
}
