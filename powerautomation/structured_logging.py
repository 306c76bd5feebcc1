"""LOG_FORMAT=json: every log line one JSON object, for log shippers.

    {"time": "2026-12-05T10:00:00.123Z", "level": "INFO", "logger": "deployments.runner.sequence",
     "message": "...", "coordination_id": "...", "environment_id": "...", "exception": "Traceback ..."}

The ids come from the record (`extra={"coordination_id": ...}`) or else from `log_context`,
which the coordinator sets around a coordination's run and each environment's delivery, so
whatever logs inside (a library too) is tagged. settings.LOGGING puts LogContextFilter and
the formatter on the handlers; powerautomation/gunicorn_logging.py does the same for
gunicorn's own error and access logs, which do not go through Django's logging.
"""

import contextlib
import contextvars
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime

from django.core.exceptions import ImproperlyConfigured

LOG_FORMATS = ("text", "json")
CONTEXT_FIELDS = ("coordination_id", "environment_id")

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context")


def log_format() -> str:
    """LOG_FORMAT from the environment (`text` by default); anything else stops start-up."""
    raw = os.environ.get("LOG_FORMAT", "")
    value = raw.strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {raw!r}")
    return value


@contextlib.contextmanager
def log_context(**ids: str) -> Iterator[None]:
    """Tag every record logged in this thread (or task) inside the block with `ids`."""
    token = _context.set({**_context.get({}), **ids})
    try:
        yield
    finally:
        _context.reset(token)


class LogContextFilter(logging.Filter):
    """Copies the ids of the current log_context onto the record, unless it has its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get({}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line: dict[str, object] = {
            "time": when.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                line[name] = str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)
