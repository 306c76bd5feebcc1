"""What can go wrong, as exceptions that carry the CLI's exit code: an API error keeps
the field it names and its message (`exc.field`, `exc.message`, all of them in
`exc.errors`)."""

from __future__ import annotations

from typing import Any

# The CLI's exit codes; 0-3 are `manage.py trigger_local`'s.
EXIT_OK = 0
EXIT_FAILED = 1  # the run failed or was cancelled; a conflict (already ended, not awaiting approval)
EXIT_BAD_INPUT = 2  # bad input or configuration (400, 404, a version that does not fit, a busy environment)
EXIT_STILL_RUNNING = 3  # --timeout reached; the run goes on
EXIT_REFUSED = 4  # 401 (no valid token) or 403 (the token's role does not allow it)
EXIT_UNAVAILABLE = 5  # the platform unreachable, 5xx or 429 after the retries

SHOWN_BODY_CHARS = 300


class ClientError(Exception):
    """Base of every error this package raises."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(ClientError):
    """No URL or token, an unreadable token file or CA bundle."""


class VersionMismatchError(ConfigurationError):
    """The platform's API version does not fit this client's."""


class UnreachableError(ClientError):
    """No answer from the platform: refused, timed out, TLS failed."""

    exit_code = EXIT_UNAVAILABLE


class BadAnswerError(ClientError):
    """An answer this client cannot use: not JSON, not the shape the endpoint promises,
    over the size limit, a redirect. The platform (or what stands at its address) is
    broken or is not the platform."""

    exit_code = EXIT_UNAVAILABLE


def _flatten(body: Any, prefix: str = "") -> list[tuple[str, str]]:
    """DRF's error body as (field path, message) pairs: `{"ec2": {"public_ip": ["..."]}}`
    is `("ec2.public_ip", "...")`; `detail`, `non_field_errors` and a config import's
    `errors` (each naming its place) are the field ""."""
    if isinstance(body, dict):
        pairs: list[tuple[str, str]] = []
        for key, value in body.items():
            if key in ("detail", "non_field_errors", "errors") and not prefix:
                pairs.extend(("", message) for _, message in _flatten(value))
            elif not (key in ("status", "busy") and not prefix):
                pairs.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return pairs
    if isinstance(body, list):
        return [pair for item in body for pair in _flatten(item, prefix)]
    return [(prefix, str(body))]


class APIError(ClientError):
    """An answer of 4xx or 5xx. `errors`: every (field, message) it gave; `field` and
    `message`: the first ("" when the answer names no field)."""

    def __init__(self, status: int, body: Any, *, method: str = "", path: str = "") -> None:
        self.status = status
        self.body = body
        self.errors: list[tuple[str, str]] = _flatten(body) if isinstance(body, (dict, list)) else []
        if not self.errors:
            text = body if isinstance(body, str) else ""
            self.errors = [("", f"HTTP {status}" + (f": {text[:SHOWN_BODY_CHARS]}" if text.strip() else ""))]
        self.field, first = self.errors[0]
        self.method, self.path = method, path
        super().__init__(first)

    def __str__(self) -> str:
        return "; ".join(f"{field}: {message}" if field else message for field, message in self.errors)


class ValidationError(APIError):
    """400: bad input; nothing changed."""


class AuthenticationError(APIError):
    """401: no valid token (missing, wrong, expired or revoked)."""

    exit_code = EXIT_REFUSED


class PermissionDeniedError(APIError):
    """403: the token's role does not allow this (writes need ADMIN)."""

    exit_code = EXIT_REFUSED


class NotFoundError(APIError):
    """404: no such coordination, environment or output."""


class ConflictError(APIError):
    """409 (or 422 for an Idempotency-Key used for another request): the state does
    not allow it."""

    exit_code = EXIT_FAILED


class ThrottledError(APIError):
    """429 after the retries: over the token's request budget."""

    exit_code = EXIT_UNAVAILABLE

    def __init__(self, status: int, body: Any, *, retry_after: float | None = None, **kwargs: str) -> None:
        super().__init__(status, body, **kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx after the retries."""

    exit_code = EXIT_UNAVAILABLE


_BY_STATUS: dict[int, type] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: ConflictError,
}


def api_error(status: int, body: Any, **kwargs: Any) -> APIError:
    if status == 429:
        return ThrottledError(status, body, **kwargs)
    if status >= 500:
        kwargs.pop("retry_after", None)
        return ServerError(status, body, **kwargs)
    kwargs.pop("retry_after", None)
    return _BY_STATUS.get(status, APIError)(status, body, **kwargs)
