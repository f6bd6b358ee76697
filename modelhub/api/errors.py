"""One JSON shape for every API error.

    {"error": {"message": "manifest.inputs[0].datatype: unknown datatype 'FP99'; …",
               "code": "invalid",
               "fields": {"manifest.inputs[0].datatype": "unknown datatype 'FP99'; …"}}}

`message` is one line a CI log can show as is; `code` is stable and meant for
programs; `fields` maps the path of each field at fault to its problem (empty
when no field is). Unexpected exceptions answer 500 in the same shape,
without a traceback, and are logged.
"""

import logging
from collections.abc import Mapping

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, OperationalError
from django.db.models import ProtectedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from modelhub.lib.archives import ArchiveError
from modelhub.lib.diskspace import StorageFull
from modelhub.registry.manifest import ManifestError
from modelhub.registry.schema import SchemaError
from modelhub.registry.services import InUse, NameTaken, VersionConflict
from modelhub.registry.storage import StorageUnavailable
from modelhub.registry.triton_config import ConfigError
from modelhub.serving.backends import BackendMissing
from modelhub.taskqueue import TaskQueueUnavailable

log = logging.getLogger(__name__)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "the request conflicts with the current state"
    default_code = "conflict"


class TooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "the request body is too large"
    default_code = "too_large"


class LengthRequired(exceptions.APIException):
    status_code = status.HTTP_411_LENGTH_REQUIRED
    default_detail = "the request needs a Content-Length header"
    default_code = "length_required"


class Busy(exceptions.APIException):
    """The database stayed locked by other writers past its wait: retrying shortly will do."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "the database is busy with other writes; try again shortly"
    default_code = "busy"
    wait = 2  # seconds, sent as Retry-After


# Lock contention, not a fault: SQLite's busy/locked results, and Postgres' deadlock,
# serialization failure and lock-not-available (SQLSTATE 40P01, 40001, 55P03).
_BUSY_SQLITE_ERRORS = {"SQLITE_BUSY", "SQLITE_LOCKED"}
_BUSY_SQLSTATES = {"40P01", "40001", "55P03"}


def _is_busy(exc: OperationalError) -> bool:
    cause = exc.__cause__
    name = getattr(cause, "sqlite_errorname", None) or ""  # extended codes too, e.g. SQLITE_BUSY_SNAPSHOT
    return any(name == busy or name.startswith(f"{busy}_") for busy in _BUSY_SQLITE_ERRORS) or (
        getattr(cause, "sqlstate", None) in _BUSY_SQLSTATES
    )


class QueueDown(exceptions.APIException):
    """The write is committed but its task could not be queued: the periodic pass will do it."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "task_queue_unavailable"
    wait = 30  # seconds, sent as Retry-After


class StorageDown(exceptions.APIException):
    """The artifact storage (an S3 bucket) could not be reached or used: nothing was kept."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "storage_unavailable"
    wait = 10  # seconds, sent as Retry-After


class NoRoom(exceptions.APIException):
    """A disk (artifact store, upload temporary folder) is full: nothing was kept; an operator must free room.

    A 413 (the server is not *able* to take content this large now), not a 5xx: nothing
    broke, the request was refused whole, and the message says which store is full."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "storage_full"


class Invalid(exceptions.APIException):
    """A 400 with per-field messages, from the domain's own error types."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"

    def __init__(self, fields: Mapping[str, str], message: str | None = None):
        self.fields = {str(k): str(v) for k, v in fields.items()}
        super().__init__(message or _join(self.fields))


def _join(fields: Mapping[str, str]) -> str:
    if not fields:
        return "invalid request"
    return "; ".join(msg if key in ("", "non_field_errors") else f"{key}: {msg}" for key, msg in fields.items())


def _flatten(detail, path: str = "") -> dict[str, str]:
    """DRF's nested error detail -> {"inputs[0].name": "msg; msg"}."""
    if isinstance(detail, Mapping):
        result: dict[str, str] = {}
        for key, value in detail.items():
            sub = str(key) if not path else f"{path}.{key}"
            if key == "non_field_errors" or key == "__all__":
                sub = path
            result.update(_flatten(value, sub))
        return result
    if isinstance(detail, list):
        if all(not isinstance(item, Mapping | list) for item in detail):
            return {path: "; ".join(str(item) for item in detail)} if detail else {}
        result = {}
        for i, item in enumerate(detail):
            if item:  # ListSerializer reports {} for the items that are fine
                result.update(_flatten(item, f"{path}[{i}]"))
        return result
    return {path: str(detail)}


def _domain_error(exc: Exception) -> Invalid | None:
    if isinstance(exc, ManifestError | SchemaError | BackendMissing):
        return Invalid(exc.errors)
    if isinstance(exc, ArchiveError):
        return Invalid({"artifact": str(exc)})
    if isinstance(exc, ConfigError):
        return Invalid({exc.field: str(exc)})
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            return Invalid({("" if k == "__all__" else k): "; ".join(v) for k, v in exc.message_dict.items()})
        return Invalid({}, "; ".join(exc.messages))
    return None


def _as_api_exception(exc: Exception) -> exceptions.APIException | None:
    if isinstance(exc, exceptions.APIException):
        return exc
    domain = _domain_error(exc)
    if domain is not None:
        return domain
    if isinstance(exc, NameTaken | InUse | VersionConflict):
        return Conflict(str(exc))
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        return exceptions.NotFound(str(exc) if isinstance(exc, ObjectDoesNotExist) and str(exc) else None)
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied(str(exc) or None)
    if isinstance(exc, StorageFull):
        log.error("storage full under %s, answered 413: %s", exc.path, exc)
        return NoRoom(str(exc))
    if isinstance(exc, StorageUnavailable):
        log.warning("artifact storage unavailable, answered 503: %s", exc)
        return StorageDown(str(exc))
    if isinstance(exc, ProtectedError):
        return Conflict(f"still in use by {len(exc.protected_objects)} other object(s): {exc.args[0]}")
    if isinstance(exc, TaskQueueUnavailable):
        return QueueDown(str(exc))
    if isinstance(exc, OperationalError) and _is_busy(exc):
        log.warning("database busy, answered 503: %s", exc)
        return Busy()
    if isinstance(exc, IntegrityError):
        # A unique constraint lost to a concurrent request; the details are the database's business.
        return Conflict("the request conflicts with data changed meanwhile; try again")
    if isinstance(exc, RequestDataTooBig):
        return TooLarge(str(exc) or None)
    if isinstance(exc, SuspiciousOperation):  # too many fields or files, bad multipart, …
        return exceptions.ParseError(str(exc) or None)
    return None


def error_body(message: str, code: str, fields: Mapping[str, str] | None = None) -> dict:
    return {"error": {"message": message, "code": code, "fields": dict(fields or {})}}


def exception_handler(exc, context):
    api_exc = _as_api_exception(exc)
    if api_exc is None:
        view = context.get("view")
        log.exception("unexpected error in %s", type(view).__name__ if view else "API view", exc_info=exc)
        set_rollback()
        return Response(
            error_body("internal server error; the details are in the server log", "server_error"),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    headers = {}
    if getattr(api_exc, "auth_header", None):
        headers["WWW-Authenticate"] = api_exc.auth_header
    if getattr(api_exc, "wait", None):
        headers["Retry-After"] = str(int(api_exc.wait))

    if isinstance(api_exc, Invalid):
        fields, message, code = api_exc.fields, str(api_exc.detail), api_exc.default_code
    elif isinstance(api_exc, exceptions.ValidationError):
        fields = _flatten(api_exc.detail)
        message, code = _join(fields), "invalid"
    else:
        detail = api_exc.detail
        if isinstance(detail, list | dict):
            fields = _flatten(detail)
            message = _join(fields)
        else:
            fields, message = {}, str(detail)
        code = getattr(detail, "code", None) or api_exc.default_code
    # Errors of the request as a whole (no field path) live in the message only.
    fields = {key: value for key, value in fields.items() if key}
    set_rollback()
    return Response(error_body(message, str(code), fields), status=api_exc.status_code, headers=headers)
