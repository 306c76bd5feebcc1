"""The REST API's calls, over one requests session.

Retries: reads, and the trigger (it always sends an Idempotency-Key, so a replay starts
nothing twice), are retried with backoff when the platform cannot be reached or answers
5xx; every request is retried after a 429, once Retry-After has passed. Other writes
(cancel, approve, retry, environments) are sent once. The platform's API version is
checked once, before the first call."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import requests.auth

from powerautomation_client import __name__ as _package
from powerautomation_client.config import Config
from powerautomation_client.errors import (
    BadAnswerError,
    ClientError,
    ConfigurationError,
    ServerError,
    ThrottledError,
    UnreachableError,
    VersionMismatchError,
    api_error,
)

logger = logging.getLogger(_package)

CLIENT_VERSION = "1.0.0"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
# Backoff before each retry of a read or an idempotent write: 0.5, 1, 2, 4, 8 s.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
THROTTLE_RETRIES = 3
# A Retry-After longer than this is not waited for: the 429 is the answer (exit 5).
MAX_RETRY_AFTER = 120.0
# No answer is read past this: a proxy's endless body must not fill the memory.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# A paged list ends within this many pages (PAGE_LIMIT each), or the platform is broken.
MAX_PAGES = 1000
PAGE_LIMIT = 500
PATH = "/api/deployment/"


def _retry_after(answer: requests.Response) -> float | None:
    """Retry-After in seconds (negative is 0; an HTTP date or garbage: None)."""
    try:
        seconds = float(answer.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return None if seconds != seconds else max(0.0, seconds)  # nan


def _read(answer: requests.Response) -> bytes:
    declared = answer.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        answer.close()
        raise BadAnswerError(f"the platform's answer is {declared} bytes, over {MAX_ANSWER_BYTES}: refused")
    chunks, size = [], 0
    for chunk in answer.iter_content(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            answer.close()
            raise BadAnswerError(f"the platform's answer is over {MAX_ANSWER_BYTES} bytes: refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _body(answer: requests.Response, content: bytes) -> Any:
    """Parsed JSON when the answer says it is JSON and is; else its text."""
    if "json" in answer.headers.get("Content-Type", ""):
        try:
            return json.loads(content.decode("utf-8"))
        except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
            pass
    return content.decode("utf-8", errors="replace")


def expect(body: Any, what: str, **fields: type | tuple[type, ...]) -> dict[str, Any]:
    """`body` if it is a JSON object with these fields of these types; else BadAnswerError
    naming the answer (`what`) and the field."""
    if not isinstance(body, dict):
        shown = "text" if isinstance(body, str) else type(body).__name__
        raise BadAnswerError(f"the platform's answer to {what} is {shown}, not a JSON object: is the URL the platform?")
    for name, kind in fields.items():
        value = body.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadAnswerError(f"the platform's answer to {what} has no valid {name!r}: not this client's API")
    return body


class TokenAuth(requests.auth.AuthBase):
    """The token in the Authorization header of each request (set as the session's auth,
    a ~/.netrc entry cannot replace it); its repr does not show it."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Token {self._token}"
        return request

    def __repr__(self) -> str:
        return "TokenAuth(***)"


class Client:
    """One platform, one token. Each method is one endpoint (docs/api.md)."""

    def __init__(self, config: Config, *, session: requests.Session | None = None) -> None:
        self.config = config
        self.session = session or requests.Session()
        self.session.auth = TokenAuth(config.token)
        self.session.headers["User-Agent"] = f"powerautomation-client/{CLIENT_VERSION}"
        self.session.verify = config.verify
        self.api_version: str | None = None

    # --- the transport ---------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            # No redirect is followed: it would carry the token (and turn a POST into a GET).
            return self.session.request(
                method,
                url,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                stream=True,
                allow_redirects=False,
                # Given each time: REQUESTS_CA_BUNDLE in the environment would replace the session's.
                verify=self.config.verify,
                **kwargs,
            )
        except requests.exceptions.SSLError as exc:
            raise UnreachableError(
                f"TLS to {self.config.url} failed: {type(exc).__name__} (POWERAUTOMATION_CA_BUNDLE?)"
            ) from None
        except requests.exceptions.RequestException as exc:
            # The exception's text may quote the request; the type and address say enough.
            raise UnreachableError(f"the platform at {self.config.url} is unreachable ({type(exc).__name__})") from None

    def request(self, method: str, path: str, *, retry: bool = False, raw: bool = False, **kwargs: Any) -> Any:
        """The answer's body (parsed JSON, or text); an APIError subclass for 4xx/5xx.
        `retry`: safe to send again (a read, an idempotent write)."""
        if self.api_version is None and path != "/api/version":
            self.check_version()
        url = self.config.url + path
        delays, throttled = list(RETRY_DELAYS) if retry else [], 0
        while True:
            try:
                answer = self._send(method, url, **kwargs)
                content = _read(answer)
            except UnreachableError:
                if not delays:
                    raise
                time.sleep(delays.pop(0))
                continue
            # An answer that quotes the token (an echoing proxy) must not print it.
            content = content.replace(self.config.token.encode(), b"***")
            if 300 <= answer.status_code < 400:
                raise self._redirected(answer)
            if answer.status_code < 400:
                return (answer, content) if raw else _body(answer, content)
            error = api_error(
                answer.status_code,
                _body(answer, content),
                retry_after=_retry_after(answer),
                method=method,
                path=path,
            )
            if (
                isinstance(error, ThrottledError)
                and throttled < THROTTLE_RETRIES
                and (error.retry_after or 0) <= MAX_RETRY_AFTER
            ):
                throttled += 1
                wait = error.retry_after if error.retry_after is not None else 1.0
                logger.warning("over the request limit (429): waiting %.0f s as Retry-After says", wait)
                time.sleep(wait)
                continue
            if isinstance(error, ServerError) and delays:
                time.sleep(delays.pop(0))
                continue
            raise error

    def _redirected(self, answer: requests.Response) -> ConfigurationError:
        target = urlsplit(answer.headers.get("Location", ""))
        where = f" to {target.scheme}://{target.netloc.rpartition('@')[2]}" if target.netloc else ""
        return ConfigurationError(
            f"POWERAUTOMATION_URL: the platform at {self.config.url} answered {answer.status_code}{where}; "
            "set the address it moved to (the client follows no redirect: it would carry the token)"
        )

    def check_version(self) -> str:
        """The platform's API version; VersionMismatchError when its major version is
        not this client's."""
        try:
            body = self.request("GET", "/api/version", retry=True)
        except ClientError as exc:
            if getattr(exc, "status", None) == 404:
                raise VersionMismatchError(
                    f"the platform at {self.config.url} has no /api/version: it is older than this client "
                    f"(powerautomation-client {CLIENT_VERSION} needs API {CLIENT_VERSION.split('.')[0]}.x)"
                ) from None
            raise
        version = expect(body, "GET /api/version", api_version=str)["api_version"]
        if version.split(".")[0] != CLIENT_VERSION.split(".")[0]:
            raise VersionMismatchError(
                f"the platform's API is version {version[:40] or '?'}; powerautomation-client {CLIENT_VERSION} fits "
                f"API {CLIENT_VERSION.split('.')[0]}.x only: install the client of the platform's version"
            )
        self.api_version = version
        return version

    def get(self, path: str, *, retry: bool = True, **params: Any) -> Any:
        return self.request("GET", PATH + path, retry=retry, params=params or None)

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every result of a paged list, following `next` (a cursor)."""
        page = expect(self.get(path, **params), f"GET {path}", results=list)
        for count in range(1, MAX_PAGES + 1):
            yield from page["results"]
            after = page.get("next")
            if not after:
                return
            if not isinstance(after, str):
                raise BadAnswerError(f"the platform's answer to GET {path} has no valid 'next': not this client's API")
            if count == MAX_PAGES:
                raise BadAnswerError(f"the platform's answer to GET {path} goes on past {MAX_PAGES} pages: refused")
            # `next` is absolute, as the platform sees itself (maybe behind a proxy): keep its path and query.
            after = after.split(PATH, 1)[-1]
            page = expect(self.request("GET", PATH + after, retry=True), f"GET {path}", results=list)

    # --- the endpoints -----------------------------------------------------------------

    def trigger_local(self, body: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        key = idempotency_key or str(uuid.uuid4())
        answer = self.request("POST", PATH + "trigger-local", retry=True, json=body, headers={"Idempotency-Key": key})
        return expect(answer, "POST trigger-local", coordination_id=str)

    def coordination(self, coordination_id: str) -> dict[str, Any]:
        record = self.get(f"coordinations/{_id(coordination_id)}/")
        return expect(record, "GET coordinations/<id>/", coordination_id=str, status=str, progress=dict)

    def events(
        self, coordination_id: str, *, after: int = 0, limit: int = PAGE_LIMIT, retry: bool = True
    ) -> dict[str, Any]:
        """A page of events after `after`; each event's id above the one before it, so
        following them always moves on."""
        what = "GET coordinations/<id>/events/"
        page = self.get(f"coordinations/{_id(coordination_id)}/events/", retry=retry, after=after, limit=limit)
        expect(page, what, events=list, has_more=bool, finished=bool, next_after=int, coordination_status=str)
        for event in page["events"]:
            if expect(event, what, id=int)["id"] <= after:
                raise BadAnswerError(f"the platform's answer to {what} repeats event {event['id']}: refused")
            after = event["id"]
        if page["has_more"] and not page["events"]:
            raise BadAnswerError(f"the platform's answer to {what} has more events but gives none: refused")
        return page

    def status(self) -> dict[str, Any]:
        return expect(self.get("status"), "GET status", active=list)

    def history(self, *, limit: int = 10) -> list[dict[str, Any]]:
        return expect(self.get("history", limit=limit), "GET history", results=list)["results"]

    def action(self, coordination_id: str, name: str) -> dict[str, Any]:
        """cancel, approve or retry."""
        answer = self.request("POST", f"{PATH}coordinations/{_id(coordination_id)}/{name}/")
        return expect(answer, f"POST coordinations/<id>/{name}/", coordination_id=str)

    def environments(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self.pages("environments", limit=PAGE_LIMIT, **filters)

    def environment(self, environment_id: str) -> dict[str, Any]:
        return expect(self.get(f"environments/{_id(environment_id)}/"), "GET environments/<id>/")

    def save_environment(self, values: dict[str, Any]) -> dict[str, Any]:
        """Create the environment, or replace it (PUT) when it exists."""
        environment_id = str(values.get("environment_id", ""))
        try:
            self.environment(environment_id)
        except ClientError as exc:
            if getattr(exc, "status", None) != 404:
                raise
            return expect(self.request("POST", PATH + "environments", json=values), "POST environments")
        body = {key: value for key, value in values.items() if key != "environment_id"}
        answer = self.request("PUT", f"{PATH}environments/{_id(environment_id)}/", json=body)
        return expect(answer, "PUT environments/<id>/")

    def config_export(self) -> dict[str, Any]:
        return expect(self.get("config"), "GET config", environments=list)

    def config_import(self, document: Any, *, params: dict[str, str] | None = None) -> dict[str, Any]:
        return expect(self.request("POST", PATH + "config", json=document, params=params), "POST config")

    def output(self, coordination_id: str, environment_id: str, *, offset: int = 0, limit: int | None = None) -> Any:
        """A piece of an environment's output from byte `offset`: `text`, `next_offset`
        (never behind `offset`), `complete`."""
        params: dict[str, Any] = {"format": "json", "offset": offset}
        if limit is not None:
            params["limit"] = limit
        path = f"coordinations/{_id(coordination_id)}/environments/{_id(environment_id)}/output"
        what = "GET coordinations/<id>/environments/<env>/output"
        piece = expect(self.get(path, **params), what, text=str, next_offset=int, complete=bool)
        if piece["next_offset"] < offset:
            raise BadAnswerError(f"the platform's answer to {what} goes back to byte {piece['next_offset']}: refused")
        return piece


def _id(value: str) -> str:
    """An id as one path segment: `../x` or `a/b` cannot reach another endpoint."""
    return quote(str(value), safe="")
