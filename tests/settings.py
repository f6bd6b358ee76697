"""Settings for the test suite: ModelHub's settings on real Postgres."""

import os
import tempfile

# TEST_DATABASE_URL, as scripts/test reads it, also when pytest is run directly.
os.environ.setdefault(
    "DATABASE_URL", os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/modelhub")
)
os.environ.setdefault("MODELHUB_VAR_DIR", tempfile.mkdtemp(prefix="modelhub-test-"))
os.environ.setdefault("CELERY_BROKER_URL", "memory://localhost/")

from modelhub.settings import *  # noqa: F403

# Deploy requests run the reconciler in-process, against the real Triton.
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only
TRITON_TIMEOUT_S = 3.0
TRITON_LOAD_TIMEOUT_S = 30.0
# Eager Celery runs the memory sample after a load at once: no settle wait on every test's load.
MONITORING_MEMORY_SETTLE_S = 0.0
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405 - whitenoise warns if it is missing
