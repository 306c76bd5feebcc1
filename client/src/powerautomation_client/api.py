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
from urllib.parse import quote

import requests

from powerautomation_client import __name__ as _package
from powerautomation_client.config import Config
from powerautomation_client.errors import (
    ClientError,
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
MAX_RETRY_AFTER = 300.0
# No answer is read past this: a proxy's endless body must not fill the memory.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
PAGE_LIMIT = 500
PATH = "/api/deployment/"


def _retry_after(answer: requests.Response) -> float | None:
    try:
        return max(0.0, min(float(answer.headers.get("Retry-After", "")), MAX_RETRY_AFTER))
    except ValueError:
        return None


def _read(answer: requests.Response) -> bytes:
    chunks, size = [], 0
    for chunk in answer.iter_content(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            answer.close()
            raise ClientError(f"the platform's answer is over {MAX_ANSWER_BYTES} bytes: refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _body(answer: requests.Response, content: bytes) -> Any:
    if "json" in answer.headers.get("Content-Type", ""):
        try:
            return json.loads(content.decode("utf-8"))
        except ValueError:
            pass
    return content.decode("utf-8", errors="replace")


class Client:
    """One platform, one token. Each method is one endpoint (docs/api.md)."""

    def __init__(self, config: Config, *, session: requests.Session | None = None) -> None:
        self.config = config
        self.session = session or requests.Session()
        self.session.headers.update(
            {"Authorization": f"Token {config.token}", "User-Agent": f"powerautomation-client/{CLIENT_VERSION}"}
        )
        self.session.verify = config.verify
        self.api_version: str | None = None

    # --- the transport ---------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), stream=True, **kwargs)
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
            if answer.status_code < 400:
                return (answer, content) if raw else _body(answer, content)
            error = api_error(
                answer.status_code,
                _body(answer, content),
                retry_after=_retry_after(answer),
                method=method,
                path=path,
            )
            if isinstance(error, ThrottledError) and throttled < THROTTLE_RETRIES:
                throttled += 1
                wait = error.retry_after if error.retry_after is not None else 1.0
                logger.warning("over the request limit (429): waiting %.0f s as Retry-After says", wait)
                time.sleep(wait)
                continue
            if isinstance(error, ServerError) and delays:
                time.sleep(delays.pop(0))
                continue
            raise error

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
        version = str(body.get("api_version", "")) if isinstance(body, dict) else ""
        if version.split(".")[0] != CLIENT_VERSION.split(".")[0]:
            raise VersionMismatchError(
                f"the platform's API is version {version or '?'}; powerautomation-client {CLIENT_VERSION} fits "
                f"API {CLIENT_VERSION.split('.')[0]}.x only: install the client of the platform's version"
            )
        self.api_version = version
        return version

    def get(self, path: str, *, retry: bool = True, **params: Any) -> Any:
        return self.request("GET", PATH + path, retry=retry, params=params or None)

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every result of a paged list, following `next` (a cursor)."""
        page = self.get(path, **params)
        while True:
            yield from page["results"]
            if not page.get("next"):
                return
            # `next` is absolute, as the platform sees itself (maybe behind a proxy): keep its path and query.
            after = page["next"].split(PATH, 1)[-1]
            page = self.request("GET", PATH + after, retry=True)

    # --- the endpoints -----------------------------------------------------------------

    def trigger_local(self, body: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        key = idempotency_key or str(uuid.uuid4())
        return self.request("POST", PATH + "trigger-local", retry=True, json=body, headers={"Idempotency-Key": key})

    def coordination(self, coordination_id: str) -> dict[str, Any]:
        return self.get(f"coordinations/{_id(coordination_id)}/")

    def events(
        self, coordination_id: str, *, after: int = 0, limit: int = PAGE_LIMIT, retry: bool = True
    ) -> dict[str, Any]:
        return self.get(f"coordinations/{_id(coordination_id)}/events/", retry=retry, after=after, limit=limit)

    def status(self) -> dict[str, Any]:
        return self.get("status")

    def history(self, *, limit: int = 10) -> list[dict[str, Any]]:
        return self.get("history", limit=limit)["results"]

    def action(self, coordination_id: str, name: str) -> dict[str, Any]:
        """cancel, approve or retry."""
        return self.request("POST", f"{PATH}coordinations/{_id(coordination_id)}/{name}/")

    def environments(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self.pages("environments", limit=PAGE_LIMIT, **filters)

    def environment(self, environment_id: str) -> dict[str, Any]:
        return self.get(f"environments/{_id(environment_id)}/")

    def save_environment(self, values: dict[str, Any]) -> dict[str, Any]:
        """Create the environment, or replace it (PUT) when it exists."""
        environment_id = str(values.get("environment_id", ""))
        try:
            self.environment(environment_id)
        except ClientError as exc:
            if getattr(exc, "status", None) != 404:
                raise
            return self.request("POST", PATH + "environments", json=values)
        body = {key: value for key, value in values.items() if key != "environment_id"}
        return self.request("PUT", f"{PATH}environments/{_id(environment_id)}/", json=body)

    def config_export(self) -> Any:
        return self.get("config")

    def config_import(self, document: Any, *, params: dict[str, str] | None = None) -> Any:
        return self.request("POST", PATH + "config", json=document, params=params)

    def output(self, coordination_id: str, environment_id: str, *, offset: int = 0, limit: int | None = None) -> Any:
        params: dict[str, Any] = {"format": "json", "offset": offset}
        if limit is not None:
            params["limit"] = limit
        path = f"coordinations/{_id(coordination_id)}/environments/{_id(environment_id)}/output"
        return self.get(path, **params)


def _id(value: str) -> str:
    """An id as one path segment: `../x` or `a/b` cannot reach another endpoint."""
    return quote(str(value), safe="")
