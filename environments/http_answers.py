"""HTTP requests whose answers are never trusted for their size.

A health URL, an agent or a notification receiver can answer with a body of any size, or one
that never ends. Every request the platform makes to a machine goes through `request` here:
the body is streamed, at most `limit` bytes are kept, reading stops after `read_seconds`,
and the connection is closed (never drained), so one bad machine costs a worker a few KiB
and a bounded time. The body is read as it came off the wire (not decompressed), so every
request asks for it uncompressed (`Accept-Encoding: identity`): requests would otherwise
offer gzip, and a gzip answer is not JSON.
"""

import time
from dataclasses import dataclass

import requests
import urllib3

from powerautomation import json_input

# What an error excerpt, a health check, a preflight or a notification receiver's answer
# needs. A finished run's {"success", "exit_code", "output"} is allowed more: RUN_RESULT_BYTES.
ANSWER_BYTES = 4 * 1024
READ_CHUNK_BYTES = 4 * 1024
# The raw stream is read undecoded: ask for the body as it is.
NO_COMPRESSION = {"Accept-Encoding": "identity"}


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: bytes
    complete: bool  # the whole body was read (not cut at the limit, the time bound or an error)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> object:
        """The body as strict JSON (powerautomation/json_input: no duplicate keys, NaN or
        deep nesting); ValueError when it is not, or when it was cut short."""
        if not self.complete:
            raise ValueError("the answer was cut short")
        return json_input.loads(self.body)  # JSONInputError is a ValueError


def request(
    method: str, url: str, *, timeout: float | tuple[float, float], limit: int = ANSWER_BYTES, **kwargs
) -> Answer:
    """`requests.request(method, url, ...)` that reads at most `limit` bytes of the body, for
    at most the read timeout in all. Raises what requests raises before the status line."""
    read_seconds = timeout[1] if isinstance(timeout, tuple) else timeout
    headers = {**(kwargs.pop("headers", None) or {}), **NO_COMPRESSION}
    response = requests.request(method, url, timeout=timeout, stream=True, headers=headers, **kwargs)
    try:
        body, complete = _read(response.raw, limit, time.monotonic() + read_seconds)
    finally:
        response.close()
    return Answer(response.status_code, body, complete)


def _read(raw: urllib3.BaseHTTPResponse, limit: int, deadline: float) -> tuple[bytes, bool]:
    """One socket read at a time (`read1`), so a trickling body cannot hold a read open past
    `deadline` by more than one socket timeout."""
    body = bytearray()
    try:
        while len(body) <= limit and time.monotonic() < deadline:
            chunk = raw.read1(READ_CHUNK_BYTES)
            if not chunk:
                return bytes(body), True
            body += chunk
    except (urllib3.exceptions.HTTPError, OSError, ValueError):
        pass  # reset, timed out or malformed mid-body: what arrived is the excerpt
    return bytes(body[:limit]), False
