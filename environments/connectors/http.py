"""What the http_api and webhook connectors share: sending the trigger, reading the
answer, and waiting until the run is known to have finished.

Neither method is fire-and-forget. After the agent accepts, the run ends when the agent
calls back; without a callback URL, when the health check turns healthy; with neither,
the environment succeeds as "delivered, not verified" and says so.
"""

import json
import re
import time
from datetime import UTC, datetime

import requests

from environments import http_answers
from environments.connectors.base import ConnectorError, DeploymentContext, Reporter, RunResult, Target
from environments.http_answers import Answer

HEALTH_POLL_SECONDS = 5.0
EXCERPT_CHARS = 200
NOT_VERIFIED = "delivered, not verified"
# The key of an agent's answer body in a ConnectorError's (and a StageEvent's) data.
RESPONSE_EXCERPT = "response_excerpt"
BODY_HIDDEN = "response body: ADMINs only"
# A finished run's answer carries the script's output (the agent keeps its last 64 KiB;
# JSON escaping can double it); any other answer is read up to http_answers.ANSWER_BYTES.
RUN_RESULT_BYTES = 256 * 1024
# An exit code as the callback takes it: what the database's integer column holds.
EXIT_CODE_MIN, EXIT_CODE_MAX = -(2**31), 2**31 - 1


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def excerpt(text: str, *secrets: str) -> str:
    """A short, single-line piece of a response body for an error message, with any
    secret we sent blanked out in case the server echoes it."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = re.sub(r"\s+", " ", text).strip()
    return text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else "")


def post_trigger(
    url: str, *, body: bytes, headers: dict, context: DeploymentContext, secrets: tuple[str, ...]
) -> Answer:
    """POST the trigger (reading at most RUN_RESULT_BYTES of the answer); map transport
    failures to ConnectorError (retryable or not)."""
    remaining = context.deadline - time.time() if context.deadline else context.request_timeout
    if remaining <= 0:
        raise ConnectorError(
            "the environment's timeout passed before the trigger was sent", reason="timeout", permanent=True
        )
    try:
        return http_answers.request(
            "POST",
            url,
            limit=RUN_RESULT_BYTES,
            data=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=(context.connect_timeout, min(context.request_timeout, max(remaining, 1.0))),
            allow_redirects=False,
            verify=context.ca_bundle or True,
        )
    except requests.exceptions.SSLError as exc:
        raise ConnectorError(
            f"TLS certificate of {url} not trusted: {excerpt(str(exc), *secrets)}", reason="tls_error", permanent=True
        ) from None
    except requests.exceptions.Timeout:
        raise ConnectorError(f"{url} did not answer in time", reason="request_timeout", permanent=False) from None
    except requests.exceptions.ConnectionError as exc:
        detail = _connection_detail(exc)
        raise ConnectorError(
            f"cannot connect to {url}: {detail}", reason="connection_failed", permanent=False
        ) from None
    except requests.RequestException as exc:
        raise ConnectorError(
            f"request to {url} failed: {type(exc).__name__}", reason="connection_failed", permanent=False
        ) from None


def _connection_detail(exc: Exception) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if known in text:
            return known
    return type(exc).__name__


def raise_for_answer(response: Answer, url: str, context: DeploymentContext, secrets: tuple) -> None:
    """Errors for the answers that are not an acceptance or a finished run. The body the
    agent answered could hold anything, so it stays out of the message (which VIEWERs
    read): it goes in the error's data as `response_excerpt`, which only ADMINs see."""
    status = response.status_code
    if status == 409 and context.attempt > 1 and is_duplicate_answer(response):
        return  # an earlier attempt got through; its run is the one to wait for
    if status == 409:
        what, reason, permanent = "the agent is busy", "busy", True
    elif status in (401, 403):
        what, reason, permanent = "credentials refused", "auth_failed", True
    elif status >= 500:
        what, reason, permanent = "server error", "server_error", False
    elif status >= 300:
        what, reason, permanent = "rejected", "rejected", True
    else:
        return
    raise ConnectorError(
        f"HTTP {status} from {url}: {what} ({BODY_HIDDEN})",
        reason=reason,
        permanent=permanent,
        data={"status_code": status, RESPONSE_EXCERPT: excerpt(response.text[: http_answers.ANSWER_BYTES], *secrets)},
    )


def is_duplicate_answer(response: Answer) -> bool:
    """A 409 that says this very delivery was already accepted (`"duplicate": true`; older
    agents: `"error": "duplicate delivery"`), not that the agent is busy with another run."""
    try:
        data = response.json()
    except ValueError:
        return False
    return isinstance(data, dict) and (data.get("duplicate") is True or data.get("error") == "duplicate delivery")


def parse_finished_run(response: Answer, url: str) -> tuple[RunResult, str]:
    """A `200` from an http_api agent: `{"success": bool, "exit_code": int, "output": str}`
    (at most RUN_RESULT_BYTES). Returns the result and the output."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
        cut = "" if response.complete else f", or larger than {RUN_RESULT_BYTES} bytes"
        raise ConnectorError(
            f'HTTP 200 from {url} without a run result ({{"success", "exit_code", "output"}}{cut})',
            reason="bad_response",
            permanent=True,
        )
    exit_code = data.get("exit_code")
    if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not EXIT_CODE_MIN <= exit_code <= EXIT_CODE_MAX:
        exit_code = 0 if data["success"] else 1  # the database column holds a 32-bit integer
    return RunResult(exit_code=exit_code), finished_output(data)


def finished_output(data: dict) -> str:
    output = data.get("output")
    return output if isinstance(output, str) else ""


def promises_callback(response: Answer) -> bool:
    """An acceptance that says the agent will call back (`"callback": true`, as ours does).
    Other agents (the original project's webhook receivers answer `{"received": true}`) never
    call back: waiting for them would only end at the timeout. A `409` duplicate on a retry
    stands for the first attempt's acceptance, which only an agent that calls back gives."""
    if response.status_code == 409:
        return is_duplicate_answer(response)
    try:
        data = response.json()
    except ValueError:
        return False
    # Our agents before "callback" existed said {"accepted": true} and do call back; the
    # original receivers say {"received": true} and do not.
    if not isinstance(data, dict):
        return False
    return data["callback"] is True if "callback" in data else data.get("accepted") is True


def original_answer(response: Answer) -> dict | None:
    """The original PowerAutomation agents' answer to a trigger, given once the script has
    finished: `{"status": "success", "message", "deployment_id", "script_output",
    "timestamp"}` (200) or `{"status": "error", "message", "error", "timestamp"}` (any status,
    usually 500). None for any other answer (ours: `{"success", "exit_code", "output"}`)."""
    try:
        data = response.json()
    except ValueError:
        return None
    if not isinstance(data, dict) or "success" in data or data.get("status") not in ("success", "error"):
        return None
    if data["status"] == "success" and response.status_code != 200:
        return None
    return data


def finish_original(data: dict, response: Answer, url: str, reporter: Reporter, secrets: tuple) -> RunResult:
    """A run the original agent has finished: `success` succeeded with `script_output` as its
    output; `error` failed, not retried (the script did run). What the agent says goes into the
    output, which shows what the machine said, never into the error message VIEWERs read."""
    status = response.status_code
    reporter.script_started(f"POST {url}: the agent ran the script (HTTP {status}, status {data['status']!r})")
    output = data.get("script_output") if data["status"] == "success" else None
    if not isinstance(output, str):
        said = [f"{key}: {data[key]}" for key in ("message", "error") if isinstance(data.get(key), str)]
        output = "\n".join(excerpt(line, *secrets) for line in said)
    if output:
        reporter.output(output if output.endswith("\n") else output + "\n")
    if data["status"] == "success":
        return RunResult(exit_code=0, note="reported by the agent")
    raise ConnectorError(
        f'HTTP {status} from {url}: the agent reports the script failed (status "error"; its message is in the output)',
        reason="script_failed",
        permanent=True,
        data={"status_code": status},
    )


def await_completion(
    target: Target, context: DeploymentContext, reporter: Reporter, how: str, *, promised: bool = True
) -> RunResult:
    """The trigger was accepted: wait for the run's end within the environment's timeout.
    Through the callback only when the agent `promised` one (see promises_callback)."""
    reporter.script_started(f"{how}; waiting for the agent to report")
    if context.callback_url and promised:
        result = reporter.wait_for_callback(context.deadline)
        if reporter.stop.is_set():
            raise ConnectorError("stopped: the coordination was cancelled", reason="cancelled", permanent=True)
        if result is None:
            raise ConnectorError(
                f"no callback from the agent within the environment's timeout of {target.timeout} s",
                reason="timeout",
                permanent=True,
            )
        output = finished_output(result)
        if output:
            reporter.output(output if output.endswith("\n") else output + "\n")
        return RunResult(exit_code=result["exit_code"], note="reported by the agent's callback")
    if target.health_check_url:
        return _await_healthy(target, context, reporter)
    return RunResult(exit_code=0, note=NOT_VERIFIED)


def _await_healthy(target: Target, context: DeploymentContext, reporter: Reporter) -> RunResult:
    while True:
        try:
            response = http_answers.request(
                "GET",
                target.health_check_url,
                timeout=context.connect_timeout,
                allow_redirects=False,
                verify=context.ca_bundle or True,
            )
            if 200 <= response.status_code < 300:
                return RunResult(exit_code=0, note="health check turned healthy (no callback to wait for)")
        except requests.RequestException:
            pass
        wait = min(HEALTH_POLL_SECONDS, context.deadline - time.time())
        if wait <= 0:
            raise ConnectorError(
                f"{target.health_check_url} did not turn healthy within the environment's timeout of "
                f"{target.timeout} s (no callback to wait for)",
                reason="timeout",
                permanent=True,
            )
        if reporter.stop.wait(wait):
            raise ConnectorError("stopped: the coordination was cancelled", reason="cancelled", permanent=True)


def check_answers(url: str, context: DeploymentContext, headers: dict | None = None) -> str:
    """Connectivity preflight: any HTTP answer below 500 means the endpoint is there. A GET
    triggers nothing (the agents only act on POST)."""
    try:
        response = http_answers.request(
            "GET",
            url,
            headers=headers or {},
            timeout=(context.connect_timeout, context.connect_timeout),
            allow_redirects=False,
            verify=context.ca_bundle or True,
        )
    except requests.exceptions.SSLError:
        raise ConnectorError(f"TLS certificate of {url} not trusted", reason="tls_error", permanent=True) from None
    except requests.RequestException as exc:
        raise ConnectorError(
            f"cannot reach {url}: {_connection_detail(exc)}", reason="connection_failed", permanent=False
        ) from None
    if response.status_code >= 500:
        raise ConnectorError(f"{url} answered HTTP {response.status_code}", reason="server_error", permanent=False)
    return f"{url} answers (HTTP {response.status_code})"


def json_body(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
