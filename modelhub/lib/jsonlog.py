"""Log records as JSON lines, for log collectors (Loki, Elasticsearch, Cloud Logging).

A small formatter rather than a dependency: the fields are few and fixed. One record is
one line however many lines its message or traceback has (JSON escapes the newlines).
"""

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

# The id of the request being served in this thread or task, if any
# (set by modelhub.ops.middleware.RequestIdMiddleware).
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message"} plus "request_id" and "exception" when there are some."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Django logs a request's 4xx/5xx after the middleware has returned, with the request attached.
        rid = getattr(getattr(record, "request", None), "request_id", None) or request_id.get()
        if rid:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
