"""Health checks: an HTTP GET on the environment's health_check_url; 2xx is healthy."""

import threading
import time
from dataclasses import dataclass

import requests

from environments import http_answers


@dataclass(frozen=True)
class HealthResult:
    healthy: bool
    detail: str
    latency_ms: int | None = None  # of the last try that got an answer


def check_health(
    url: str,
    *,
    timeout: float,
    retries: int,
    retry_delay: float,
    stop: threading.Event | None = None,
    ca_bundle: str = "",
) -> HealthResult:
    """GET `url` up to 1 + `retries` times, `retry_delay` seconds apart; stops early on
    `stop`. Redirects are not followed: a health endpoint answers for itself."""
    stop = stop or threading.Event()
    detail = ""
    latency_ms = None
    for attempt in range(retries + 1):
        if attempt and stop.wait(retry_delay):
            return HealthResult(False, f"{detail}; stopped before the next try", latency_ms)
        started = time.monotonic()
        try:
            # The body is never needed: at most a few KiB are read, then the connection closes.
            response = http_answers.request(
                "GET", url, timeout=timeout, allow_redirects=False, verify=ca_bundle or True
            )
        except requests.RequestException as exc:
            detail = f"GET {url}: {type(exc).__name__}"
            continue
        latency_ms = round((time.monotonic() - started) * 1000)
        if 200 <= response.status_code < 300:
            return HealthResult(True, f"GET {url}: {response.status_code}", latency_ms)
        detail = f"GET {url}: HTTP {response.status_code}"
    tries = retries + 1
    return HealthResult(False, f"{detail} (after {tries} {'try' if tries == 1 else 'tries'})", latency_ms)
