"""Keep the agents' callback tokens out of every log line.

A callback URL (`/api/deployment/callback/<token>/`) holds a live credential, and Django
(`Bad Request: <path>`, `Not Found: <path>`), runserver and gunicorn's access log all write
request paths. The filter here rewrites any such path to `/api/deployment/callback/***/`;
settings.LOGGING puts it on Django's loggers and handlers, and
powerautomation/gunicorn_logging.py on gunicorn's.
"""

import logging
import re


def _any_encoding(literal: str) -> str:
    """A pattern for `literal` with any of its characters percent-encoded (`%6B` for `k`):
    gunicorn logs the raw request line, and Django routes `/callbac%6B/` like `/callback/`."""
    return "".join(f"(?:{re.escape(char)}|%{ord(char):02x})" for char in literal)


CALLBACK_PATH = re.compile(f"({_any_encoding('/api/deployment/callback/')})[^/\\s?#\"']*", re.IGNORECASE)
REDACTED = r"\1***"


def redact_callback_tokens(text: str) -> str:
    return CALLBACK_PATH.sub(REDACTED, text)


class RedactCallbackTokens(logging.Filter):
    """Formats the record's message with the token blanked (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a malformed record: logging reports it itself
        redacted = redact_callback_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
