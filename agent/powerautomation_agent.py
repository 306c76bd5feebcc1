#!/usr/bin/env python3
"""PowerAutomation local agent: runs this machine's init script when the coordinator asks.

The other end of the `http_api` and `webhook` connection methods, for machines the coordinator
cannot reach over SSH. One file, Python standard library only (3.9+), macOS, Linux and Windows.

    python3 powerautomation_agent.py --port 8082 --script ./init_aicore.sh --token-file token.txt \
        [--webhook-secret-file secret.txt] [--bind 127.0.0.1] [--working-directory DIR] \
        [--interpreter PATH] [--max-timeout 3600] [--state-file PATH]

Endpoints:
    POST /api/deploy/init   Authorization: Bearer <token>; optional Idempotency-Key header
    POST /webhook/deploy    Standard Webhooks signature (only with --webhook-secret-file)
    GET  /health            {"status": "ok", "running": <coordination_id or null>, "last": {...}}

A trigger answers 202 at once; the script (only the one given with --script, whatever the
request says) runs in a background thread, and its result is POSTed to the request's
callback_url as {"success", "exit_code", "output"}. See README.md next to this file.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import codecs
import collections
import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import math
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "1.0"
ACTION = "init_local_environment"
WEBHOOK_EVENT = "ec2_deployment_completed"
MAX_BODY_BYTES = 64 * 1024
MAX_OUTPUT_BYTES = 64 * 1024
MAX_FIELD_CHARS = 1000
WEBHOOK_TOLERANCE_SECONDS = 5 * 60
WEBHOOK_ID_MEMORY_SECONDS = 10 * 60
WEBHOOK_ID_MEMORY_SIZE = 10000
STATE_FILE_NAME = "powerautomation-agent-webhook-ids.json"
MAX_STATE_FILE_BYTES = 2 * 1024 * 1024
MAX_JSON_DEPTH = 64  # arrays and objects inside one another; far below Python's recursion limit
CALLBACK_BACKOFF_SECONDS = (1, 2, 4, 8)  # between the 5 attempts
CALLBACK_TIMEOUT_SECONDS = 10
TERMINATE_GRACE_SECONDS = 5
SHUTDOWN_WAIT_SECONDS = 20

# Body field -> environment variable the script sees.
SCRIPT_ENVIRONMENT = (
    ("ec2_instance_id", "EC2_INSTANCE_ID"),
    ("ec2_public_ip", "EC2_PUBLIC_IP"),
    ("deployment_version", "DEPLOYMENT_VERSION"),
    ("coordination_id", "COORDINATION_ID"),
    ("environment_id", "ENVIRONMENT_ID"),
)
STRING_FIELDS = (
    "action",
    "event",
    "script_path",
    "working_directory",
    "environment_id",
    "coordination_id",
    "ec2_instance_id",
    "ec2_public_ip",
    "deployment_version",
    "timestamp",
    "callback_url",
)


def log(message: str) -> None:
    """One line on stderr. Never pass a token, secret, signature or callback URL here."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sys.stderr.write(f"{stamp} {message}\n")
    sys.stderr.flush()


def utc_now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class BadRequest(Exception):
    """Input the agent refuses; the message names the field."""


# --- JSON in ---------------------------------------------------------------------------------


class JSONRefused(ValueError):
    """JSON the agent will not read; the message says why."""


def _check_depth(text: str, max_depth: int) -> None:
    """One pass over the text: refuse arrays/objects nested deeper than max_depth. Brackets
    inside strings (escapes included) do not count; malformed JSON is left to the parser."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                raise JSONRefused(f"JSON nested too deep (more than {max_depth} levels)")
        elif char in "]}":
            depth -= 1


def _unique_object(pairs: list) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            shown = key if len(key) <= 100 else key[:100] + "..."
            raise JSONRefused(f"duplicate key {shown!r}")
        result[key] = value
    return result


def _refuse_constant(name: str):
    raise JSONRefused(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONRefused(f"number {text[:100]} is out of range")
    return value


def loads(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH):
    """json.loads for everything the agent reads: bounded nesting, no duplicate keys, no NaN,
    Infinity or out-of-range numbers. Raises JSONRefused (or another ValueError, e.g. a
    UnicodeDecodeError or json.JSONDecodeError) for anything else."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    _check_depth(text, max_depth)
    return json.loads(
        text, object_pairs_hook=_unique_object, parse_constant=_refuse_constant, parse_float=_finite_float
    )


# --- Request checks ------------------------------------------------------------------------


def validate_trigger(body: bytes, *, webhook: bool) -> dict:
    """Parse and check a trigger body; return it, or raise BadRequest naming the field."""
    try:
        data = loads(body)
    except JSONRefused as exc:
        raise BadRequest(f"body: {exc}") from None
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, ints beyond the digit limit
        raise BadRequest(f"body: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise BadRequest("body: must be a JSON object")
    for name in STRING_FIELDS:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadRequest(f"{name}: must be a string")
        if len(value) > MAX_FIELD_CHARS:
            raise BadRequest(f"{name}: longer than {MAX_FIELD_CHARS} characters")
        if "\x00" in value:
            raise BadRequest(f"{name}: contains a NUL character")
    if data.get("action") != ACTION:
        raise BadRequest(f"action: must be {ACTION!r}")
    if webhook and data.get("event") not in (None, WEBHOOK_EVENT):
        raise BadRequest(f"event: must be {WEBHOOK_EVENT!r}")
    if not data.get("coordination_id"):
        raise BadRequest("coordination_id: required")
    timeout = data.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0):
        raise BadRequest("timeout: must be a positive integer (seconds)")
    callback_url = data.get("callback_url")
    if callback_url:
        parts = urllib.parse.urlsplit(callback_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BadRequest("callback_url: must be an http or https URL")
    return data


def bearer_token_matches(header: str | None, token: bytes) -> bool:
    if not header:
        return False
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode("latin-1", "replace"), token)


def webhook_key(secret: str) -> bytes:
    """Standard Webhooks: 'whsec_<base64>' is a base64 key; any other secret is used as text."""
    key = base64.b64decode(secret[len("whsec_") :], validate=True) if secret.startswith("whsec_") else secret.encode()
    if not key:
        raise ValueError("empty webhook key")
    return key


def webhook_signature_valid(key: bytes, webhook_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """True if any `v1,<base64>` entry of the header is the HMAC-SHA256 of `id.timestamp.body`."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    valid = False
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            presented = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # No early exit: every entry costs the same whichever one matches.
        valid = hmac.compare_digest(presented, expected) or valid
    return valid


# --- Running the script ----------------------------------------------------------------------


class OutputTail:
    """The last MAX_OUTPUT_BYTES of a process's merged stdout and stderr."""

    def __init__(self, stream):
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        try:
            for chunk in iter(lambda: stream.read1(8192), b""):
                with self._lock:
                    self._buffer += chunk
                    if len(self._buffer) > MAX_OUTPUT_BYTES:
                        del self._buffer[: len(self._buffer) - MAX_OUTPUT_BYTES]
        except (OSError, ValueError):
            pass  # the pipe went away: keep what we have
        finally:
            stream.close()

    def text(self, *, wait: float) -> str:
        # A background child that inherited the pipe can keep it open after the script ends:
        # wait a little for the end of the output, never for ever.
        self._thread.join(wait)
        with self._lock:
            return self._buffer.decode("utf-8", "replace")


class Run:
    """One execution of the init script, from start to callback."""

    def __init__(self, agent: Agent, request: dict, idempotency_key: str | None, source: str):
        self.agent = agent
        self.coordination_id = request["coordination_id"]
        self.environment_id = request.get("environment_id") or ""
        self.callback_url = request.get("callback_url") or ""
        self.timeout = min(request.get("timeout") or agent.max_timeout, agent.max_timeout)
        self.idempotency_key = idempotency_key
        self.source = source
        self.started_at = utc_now_iso()
        self.stop_reason = ""
        self.stopped = threading.Event()
        env = dict(os.environ)
        for field, variable in SCRIPT_ENVIRONMENT:
            env[variable] = request.get(field) or ""
        self.process = subprocess.Popen(
            agent.command,
            cwd=agent.working_directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **_new_process_group(),
        )
        self.output = OutputTail(self.process.stdout)
        self.thread = threading.Thread(target=self._run, name=f"run-{self.coordination_id}", daemon=True)

    def start(self) -> None:
        log(f"run {self.coordination_id} ({self.source}): started pid {self.process.pid}, timeout {self.timeout} s")
        self.thread.start()

    def stop(self, reason: str) -> None:
        """End the script early (the agent is stopping)."""
        self.stop_reason = reason
        self.stopped.set()

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while self.process.poll() is None and time.monotonic() < deadline and not self.stopped.is_set():
            self.stopped.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        note = ""
        if self.process.poll() is None:
            note = self.stop_reason or f"the script timed out after {self.timeout} s and was killed"
            _kill_process_tree(self.process)
            exit_code = -1
        else:
            exit_code = self.process.returncode
        text = self.output.text(wait=2.0)
        if note:
            line = f"[powerautomation-agent] {note}\n"
            text = text[-(MAX_OUTPUT_BYTES - len(line)) :]
            text += line if not text or text.endswith("\n") else "\n" + line
        log(f"run {self.coordination_id}: exit code {exit_code}" + (f" ({note})" if note else ""))
        summary = {
            "coordination_id": self.coordination_id,
            "environment_id": self.environment_id,
            "source": self.source,
            "success": exit_code == 0,
            "exit_code": exit_code,
            "timed_out": bool(note) and not self.stop_reason,
            "started_at": self.started_at,
            "finished_at": utc_now_iso(),
            "callback": "pending" if self.callback_url else "none",
        }
        self.agent.run_finished(self, summary)
        if self.callback_url:
            result = {"success": exit_code == 0, "exit_code": exit_code, "output": text}
            self.agent.callback_finished(summary, send_callback(self.callback_url, result, self.coordination_id))


def _new_process_group() -> dict:
    """The script and everything it starts form one group, so a timeout can end them all."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _kill_process_tree(process: subprocess.Popen) -> None:
    """SIGTERM the script's process group, then SIGKILL whatever is left after a grace period."""
    if os.name == "nt":
        # taskkill /T ends the children too (e.g. bash.exe's); TerminateProcess does not.
        subprocess.run(
            ["taskkill", "/F", "/T", "/PID", str(process.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if process.poll() is None:
            process.kill()
        process.wait()
        return
    _signal_group(process, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(TERMINATE_GRACE_SECONDS)
    # Whatever is left of the group: the script itself, or children that ignored SIGTERM.
    _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A callback URL answers for itself: a redirect is an error, not a new address."""

    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def send_callback(url: str, result: dict, coordination_id: str) -> str:
    """POST the result; retry connection errors and 5xx with backoff. Returns what happened.

    2xx ends it (delivered), and so does 404: the callback token was already used or has
    expired, so no retry can succeed. The URL holds a credential: it is never logged.
    """
    body = json.dumps(result).encode("utf-8")
    where = urllib.parse.urlsplit(url).netloc
    for attempt, delay in enumerate((0, *CALLBACK_BACKOFF_SECONDS), start=1):
        time.sleep(delay)
        request = urllib.request.Request(  # noqa: S310 (validate_trigger allows only http and https)
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"powerautomation-agent/{VERSION}"},
        )
        try:
            with _opener.open(request, timeout=CALLBACK_TIMEOUT_SECONDS) as response:  # noqa: S310 (as above)
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (OSError, ValueError) as exc:  # URLError, timeouts, resets
            log(f"run {coordination_id}: callback to {where} attempt {attempt} failed: {type(exc).__name__}")
            continue
        log(f"run {coordination_id}: callback to {where} attempt {attempt}: HTTP {status}")
        if 200 <= status < 300:
            return "delivered"
        if status == 404:
            return "rejected (404: token used or expired)"
        if status < 500:
            return f"rejected (HTTP {status})"
    return "failed"


# --- The agent ---------------------------------------------------------------------------------


class WebhookIds:
    """The webhook-ids that started a run in the last WEBHOOK_ID_MEMORY_SECONDS (at most
    WEBHOOK_ID_MEMORY_SIZE), kept in a small JSON file so a delivery replayed after the agent
    restarts is still refused. Wall-clock times, pruned by age on every load and save."""

    def __init__(self, path: str | None):
        self.path = path
        self.seen: collections.OrderedDict[str, float] = collections.OrderedDict()
        if path:
            self._load()

    def _load(self) -> None:
        """Read the file if it is there; a file too large or not readable is logged and ignored."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(MAX_STATE_FILE_BYTES + 1)
            if len(raw) > MAX_STATE_FILE_BYTES:
                raise JSONRefused(f"larger than {MAX_STATE_FILE_BYTES} bytes")
            stored = loads(raw)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, JSONRefused) else type(exc).__name__
            log(f"webhook-id file {self.path}: ignored ({reason}); starting with none remembered")
            return
        if isinstance(stored, dict):
            entries = [(k, t) for k, v in stored.items() if isinstance(k, str) and (t := _timestamp(v)) is not None]
            self.seen.update(sorted(entries, key=lambda entry: entry[1]))
        self._prune()

    def _prune(self) -> None:
        cutoff = time.time() - WEBHOOK_ID_MEMORY_SECONDS
        while self.seen and (next(iter(self.seen.values())) < cutoff or len(self.seen) > WEBHOOK_ID_MEMORY_SIZE):
            self.seen.popitem(last=False)

    def __contains__(self, webhook_id: str) -> bool:
        self._prune()
        return webhook_id in self.seen

    def remember(self, webhook_id: str) -> None:
        self.seen[webhook_id] = time.time()
        self._prune()
        if not self.path:
            return
        try:
            self._save()
        except OSError as exc:
            log(f"webhook-id file {self.path}: cannot write it ({type(exc).__name__}); remembered in memory only")

    def _save(self) -> None:
        """Write to a new, unpredictably named file beside the state file (created exclusively,
        so a planted symlink cannot redirect it), then rename it over the state file."""
        folder, name = os.path.split(os.path.abspath(self.path))
        descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(dict(self.seen), handle, allow_nan=False)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _timestamp(value) -> float | None:
    """A remembered id's wall-clock time, or None if it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


class Agent:
    """What the agent knows: its configuration, the run in progress and the most recent one."""

    def __init__(
        self,
        *,
        command: list,
        working_directory: str,
        token: str,
        webhook_secret: str | None,
        max_timeout: int,
        state_file: str | None = None,
    ):
        self.command = command
        self.working_directory = working_directory
        self.token = token.encode("utf-8")
        self.webhook_key = webhook_key(webhook_secret) if webhook_secret else None
        self.max_timeout = max_timeout
        self.lock = threading.Lock()
        self.running: Run | None = None
        self.recent: Run | None = None  # the run in progress, or the last one to start
        self.last: dict | None = None
        self.webhook_ids = WebhookIds(state_file)

    def trigger(self, request: dict, *, idempotency_key: str | None = None, webhook_id: str | None = None):
        """Start a run unless one is running. Returns (status, response body).

        1. A repeated Idempotency-Key (the run in progress or the last one) gets 202 again.
        2. A webhook-id already seen gets 409 `"duplicate": true` and no run.
        3. A run in progress makes it 409 busy, `"duplicate": false`.
        4. Otherwise the script starts; only then is the webhook-id remembered, so a delivery
           refused as busy can be redelivered later with the same id.
        """
        with self.lock:
            recent = self.recent
            if idempotency_key and recent is not None and recent.idempotency_key == idempotency_key:
                return 202, {
                    "accepted": True,
                    "duplicate": True,
                    "coordination_id": recent.coordination_id,
                    "callback": bool(recent.callback_url),
                }
            if webhook_id is not None and webhook_id in self.webhook_ids:
                return 409, {"error": "duplicate delivery", "duplicate": True, "webhook_id": webhook_id}
            if self.running is not None:
                # "duplicate": false tells a retrying coordinator this is another run, not its own.
                running = self.running.coordination_id
                return 409, {"error": "busy", "duplicate": False, "running_coordination_id": running}
            source = "webhook" if webhook_id is not None else "http_api"
            try:
                run = Run(self, request, idempotency_key, source)
            except OSError as exc:
                log(f"run {request['coordination_id']}: could not start the script: {exc}")
                return 500, {"error": f"could not start the script: {type(exc).__name__}: {exc.strerror}"}
            if webhook_id is not None:
                self.webhook_ids.remember(webhook_id)
            self.running = self.recent = run
            run.start()
            # "callback": true promises the coordinator a callback: only then does it wait for one.
            return 202, {"accepted": True, "coordination_id": run.coordination_id, "callback": bool(run.callback_url)}

    def run_finished(self, run: Run, summary: dict) -> None:
        with self.lock:
            if self.running is run:
                self.running = None
            self.last = summary

    def callback_finished(self, summary: dict, outcome: str) -> None:
        with self.lock:
            summary["callback"] = outcome

    def health(self) -> dict:
        with self.lock:
            running = self.running.coordination_id if self.running else None
            last = dict(self.last) if self.last else None
        return {"status": "ok", "running": running, "last": last}

    def shutdown(self) -> None:
        """Stop the script in progress (its callback says so) and give the last run's callback
        a bounded time to be delivered."""
        with self.lock:
            running, recent = self.running, self.recent
        if running is not None:
            running.stop("the agent was stopped while the script ran; the script was killed")
        if recent is not None:
            recent.thread.join(SHUTDOWN_WAIT_SECONDS)


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the agent. Every answer is JSON; every request is logged in one line."""

    timeout = 30  # a client that stops sending mid-request does not hold a thread for ever
    agent: Agent  # set by make_server

    ROUTES = {
        "/api/deploy/init": {"POST": "api_deploy_init"},
        "/webhook/deploy": {"POST": "webhook_deploy"},
        "/health": {"GET": "health"},
    }

    def version_string(self) -> str:
        return f"powerautomation-agent/{VERSION}"

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def dispatch(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        methods = self.ROUTES.get(path)
        if methods is None or (path == "/webhook/deploy" and self.agent.webhook_key is None):
            self.discard_body()
            error = "webhook method disabled" if methods else "not found"
            return self.reply(404, {"error": error})
        if self.command not in methods:
            self.discard_body()
            return self.reply(405, {"error": f"method {self.command} not allowed"}, Allow=", ".join(methods))
        getattr(self, methods[self.command])()

    # --- endpoints

    def health(self) -> None:
        self.reply(200, self.agent.health())

    def api_deploy_init(self) -> None:
        body = self.read_body()
        if body is None:
            return
        if not bearer_token_matches(self.headers.get("Authorization"), self.agent.token):
            return self.reply(401, {"error": "missing or wrong bearer token"}, **{"WWW-Authenticate": "Bearer"})
        key = self.headers.get("Idempotency-Key")
        if key is not None and (not key or len(key) > MAX_FIELD_CHARS):
            return self.reply(400, {"error": f"Idempotency-Key: must be 1 to {MAX_FIELD_CHARS} characters"})
        self.start_run(body, webhook=False, idempotency_key=key)

    def webhook_deploy(self) -> None:
        body = self.read_body()
        if body is None:
            return
        webhook_id = self.headers.get("webhook-id")
        timestamp = self.headers.get("webhook-timestamp")
        signature = self.headers.get("webhook-signature")
        if not (webhook_id and timestamp and signature):
            return self.reply(401, {"error": "missing webhook-id, webhook-timestamp or webhook-signature header"})
        if not webhook_signature_valid(self.agent.webhook_key, webhook_id, timestamp, body, signature):
            return self.reply(401, {"error": "invalid webhook-signature"})
        try:
            sent_at = int(timestamp)
        except ValueError:
            return self.reply(401, {"error": "invalid webhook-timestamp: not an integer"})
        skew = time.time() - sent_at
        if skew > WEBHOOK_TOLERANCE_SECONDS:
            return self.reply(401, {"error": "webhook-timestamp too old"})
        if skew < -WEBHOOK_TOLERANCE_SECONDS:
            return self.reply(401, {"error": "webhook-timestamp too far in the future"})
        self.start_run(body, webhook=True, webhook_id=webhook_id)

    def start_run(self, body: bytes, *, webhook: bool, **trigger_args) -> None:
        try:
            request = validate_trigger(body, webhook=webhook)
        except BadRequest as exc:
            return self.reply(400, {"error": str(exc)})
        status, answer = self.agent.trigger(request, **trigger_args)
        self.reply(status, answer)

    # --- plumbing

    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        try:
            length = int(value)
        except ValueError:
            return -1
        return length

    def read_body(self) -> bytes | None:
        """The request body, or None after answering 400/411/413."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self.reply(411, {"error": "Content-Length: required (chunked bodies are not accepted)"})
            return None
        length = self.content_length()
        if length is None:
            self.reply(411, {"error": "Content-Length: required"})
            return None
        if length < 0:
            self.reply(400, {"error": "Content-Length: not a non-negative integer"})
            return None
        if length > MAX_BODY_BYTES:
            self.discard_body()
            self.reply(413, {"error": f"body: larger than {MAX_BODY_BYTES} bytes"})
            return None
        return self.rfile.read(length)

    def discard_body(self) -> None:
        """Read what the client sent (up to a bound), so closing the socket does not reset it
        before the client has read our answer."""
        length = self.content_length() or 0
        remaining = min(max(length, 0), 16 * MAX_BODY_BYTES)
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    def reply(self, status: int, payload: dict, **headers: str) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code="-", size="-") -> None:
        # Method, path (without query) and status only: headers carry the token and signature.
        path = urllib.parse.urlsplit(self.path).path if getattr(self, "path", None) else "-"
        status = getattr(code, "value", code)
        log(f"{self.client_address[0]} {getattr(self, 'command', None) or '-'} {path} {status}")

    def log_message(self, format, *args) -> None:
        pass  # http.server's own messages can quote the raw request line


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True


class AgentServer6(AgentServer):
    address_family = socket.AF_INET6


def make_server(agent: Agent, bind: str, port: int) -> ThreadingHTTPServer:
    handler = type("AgentHandler", (Handler,), {"agent": agent})
    server_class = AgentServer6 if ":" in bind else AgentServer
    return server_class((bind, port), handler)


# --- Start-up ---------------------------------------------------------------------------------


# --- Polling mode (--poll): the agent only connects out ------------------------------------------
#
# For a machine behind NAT: nothing listens here. The agent asks the platform for work
# (POST /api/agent/poll), runs the script of a run it took, sends the output as it arrives
# (resumable by byte offset: nothing acknowledged is sent twice, nothing unacknowledged is
# dropped), heartbeats, and reports the exit code last. See agent/README.md.

POLL_DEFAULT_INTERVAL = 5
POLL_JITTER = (0.8, 1.2)
POLL_REQUEST_TIMEOUT = 30
POLL_MAX_BACKOFF = 60
POLL_REFUSED_WAIT = 30  # a refused token: the platform's side may be fixed meanwhile
POLL_ANSWER_BYTES = 256 * 1024
OUTPUT_CHUNK_BYTES = 64 * 1024
OUTPUT_BATCH_SECONDS = 0.5
MAX_PENDING_OUTPUT_BYTES = 8 * 1024 * 1024
RESULT_RETRY_SECONDS = 600
STOP_REPORT_SECONDS = 5  # on SIGTERM: how long the last report may take


class Unreachable(Exception):
    """The platform did not answer (connection refused, timeout, TLS error, ...)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Platform:
    """HTTP(S) to the platform: JSON in and out, TLS verified, no redirects followed, every
    answer read bounded. The token goes only into the Authorization header, never a log."""

    def __init__(self, url: str, token: str, ca_bundle: str | None):
        self.base = url.rstrip("/")
        self.token = token
        handlers: list = [_NoRedirects]
        if url.startswith("https://"):
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca_bundle)))
        self.opener = urllib.request.build_opener(*handlers)

    def post(self, path: str, body: dict, timeout: float = POLL_REQUEST_TIMEOUT) -> tuple:
        """(HTTP status, answer as a dict, Retry-After seconds or None); Unreachable when no
        answer came."""
        request = urllib.request.Request(  # noqa: S310 (parse_arguments allows only http and https)
            self.base + path,
            data=json.dumps(body).encode("utf-8"),
            method="POST",
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "User-Agent": f"powerautomation-agent/{VERSION}",
            },
        )
        try:
            with self.opener.open(request, timeout=timeout) as response:  # noqa: S310 (as above)
                status, raw, headers = response.status, response.read(POLL_ANSWER_BYTES + 1), response.headers
        except urllib.error.HTTPError as exc:
            status, headers = exc.code, exc.headers
            raw = exc.read(POLL_ANSWER_BYTES + 1) if exc.fp is not None else b""
            exc.close()
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, TLS
            raise Unreachable(type(getattr(exc, "reason", None) or exc).__name__) from None
        try:
            data = loads(raw) if raw and len(raw) <= POLL_ANSWER_BYTES else {}
        except ValueError:
            data = {}
        return status, data if isinstance(data, dict) else {}, _retry_after(headers)


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return min(float(value), POLL_MAX_BACKOFF) if value is not None else None
    except ValueError:
        return None


class OutputBuffer:
    """The script's output not yet acknowledged by the platform, as text, with the byte
    offset (UTF-8) where it starts. A reader thread adds; the run's loop sends and drops."""

    def __init__(self, stream):
        self.acknowledged = 0
        self.pending = ""
        self.lock = threading.Lock()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        try:
            for chunk in iter(lambda: stream.read1(8192), b""):
                self.add(self.decoder.decode(chunk))
        except (OSError, ValueError):
            pass
        finally:
            self.add(self.decoder.decode(b"", final=True))
            stream.close()

    def add(self, text: str) -> None:
        if not text:
            return
        with self.lock:
            self.pending += text
            size = len(self.pending.encode("utf-8"))
            if size > MAX_PENDING_OUTPUT_BYTES:
                # The platform stayed out of reach this long: keep the newest part, say so.
                keep = self.pending.encode("utf-8")[-(MAX_PENDING_OUTPUT_BYTES // 2) :].decode("utf-8", "ignore")
                dropped = size - len(keep.encode("utf-8"))
                self.pending = f"\n[powerautomation-agent] {dropped} bytes of output dropped: platform unreachable\n"
                self.pending += keep

    def chunk(self) -> str:
        """The next piece to send (at most OUTPUT_CHUNK_BYTES, whole characters)."""
        with self.lock:
            return self.pending.encode("utf-8")[:OUTPUT_CHUNK_BYTES].decode("utf-8", "ignore")

    def acknowledge(self, offset: int) -> None:
        """The platform holds everything before `offset`."""
        with self.lock:
            if offset > self.acknowledged:
                advance = offset - self.acknowledged
                self.pending = self.pending.encode("utf-8")[advance:].decode("utf-8", "ignore")
                self.acknowledged = offset
            elif offset < self.acknowledged:
                # The platform lost what it had acknowledged (a restore?): it cannot be sent again.
                missing = self.acknowledged - offset
                self.pending = f"[powerautomation-agent] {missing} bytes of output were lost\n" + self.pending
                self.acknowledged = offset

    def empty(self) -> bool:
        with self.lock:
            return not self.pending


class PolledRun:
    """One run this agent took: the script, its output going up, heartbeats, the result."""

    def __init__(self, platform: Platform, run: dict, command: list, working_directory: str, max_timeout: int):
        self.platform = platform
        self.run_id = str(run.get("run_id", ""))
        self.coordination_id = str(run.get("coordination_id", ""))
        timeout = run.get("timeout")
        self.timeout = min(timeout if isinstance(timeout, int) and timeout > 0 else max_timeout, max_timeout)
        beat = run.get("heartbeat_interval")
        self.heartbeat_interval = beat if isinstance(beat, (int, float)) and 1 <= beat <= 300 else POLL_DEFAULT_INTERVAL
        self.stopping = threading.Event()  # the agent itself is stopping (SIGTERM)
        self.stop_reason = ""
        env = dict(os.environ)
        variables = run.get("environment") if isinstance(run.get("environment"), dict) else {}
        for _, variable in SCRIPT_ENVIRONMENT:
            value = variables.get(variable, "")
            env[variable] = value if isinstance(value, str) else ""
        self.process = subprocess.Popen(
            command,
            cwd=working_directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **_new_process_group(),
        )
        self.output = OutputBuffer(self.process.stdout)
        log(f"run {self.coordination_id}: started pid {self.process.pid}, timeout {self.timeout} s")

    def _path(self, what: str) -> str:
        return f"/api/agent/runs/{urllib.parse.quote(self.run_id, safe='')}/{what}"

    def _talk(self, what: str, body: dict, timeout: float = POLL_REQUEST_TIMEOUT) -> dict | None:
        """One report; None when the platform did not take it (the caller tries again later)."""
        try:
            status, data, _ = self.platform.post(self._path(what), body, timeout=timeout)
        except Unreachable as exc:
            log(f"run {self.coordination_id}: {what} not sent ({exc}); will retry")
            return None
        if status == 409 and isinstance(data.get("offset"), int):
            self.output.acknowledge(data["offset"])
            return None
        if status != 200:
            log(f"run {self.coordination_id}: {what} answered HTTP {status}")
            return {"gone": True} if status == 404 else None
        if isinstance(data.get("offset"), int):
            self.output.acknowledge(data["offset"])
        if data.get("stop") is True and not self.stop_reason:
            self.stop_reason = str(data.get("stop_reason") or "the platform ended the run")[:300]
            log(f"run {self.coordination_id}: the platform says stop: {self.stop_reason}")
        return data

    def _send_output(self) -> bool:
        text = self.output.chunk()
        return bool(text) and self._talk("output", {"offset": self.output.acknowledged, "text": text}) is not None

    def execute(self) -> None:
        deadline = time.monotonic() + self.timeout
        last_contact = last_send = time.monotonic()
        note = ""
        while self.process.poll() is None:
            now = time.monotonic()
            if self.stop_reason or self.stopping.is_set() or now >= deadline:
                note = self.stop_reason or ("the agent is stopping" if self.stopping.is_set() else "")
                note = note or f"the script timed out after {self.timeout} s and was killed"
                _kill_process_tree(self.process)
                break
            if not self.output.empty() and now - last_send >= OUTPUT_BATCH_SECONDS:
                last_send = now
                if self._send_output():
                    last_contact = now
            elif now - last_contact >= self.heartbeat_interval:
                # Not heard: try again in a second, not at every turn of the loop.
                ok = self._talk("heartbeat", {}) is not None
                last_contact = now if ok else now - self.heartbeat_interval + 1
            time.sleep(0.1)
        self.output.thread.join(2.0)  # a background child may hold the pipe open: not for ever
        exit_code = self.process.returncode
        if note:
            self.output.add(f"\n[powerautomation-agent] {note}\n")
        log(f"run {self.coordination_id}: exit code {exit_code}" + (f" ({note})" if note else ""))
        self._report(exit_code)

    def _report(self, exit_code: int) -> None:
        """All the output, then the result; retried until the platform takes it, says the
        run is gone, or RESULT_RETRY_SECONDS (STOP_REPORT_SECONDS when the agent stops) pass."""
        patience = STOP_REPORT_SECONDS if self.stopping.is_set() else RESULT_RETRY_SECONDS
        deadline = time.monotonic() + patience
        delay = 1.0
        while time.monotonic() < deadline:
            if not self.output.empty():
                if self._send_output():
                    continue
            else:
                answer = self._talk(
                    "result", {"exit_code": exit_code, "offset": self.output.acknowledged}, timeout=min(patience, 30)
                )
                if answer is not None:
                    log(f"run {self.coordination_id}: result {'lost (run gone)' if answer.get('gone') else 'sent'}")
                    return
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, POLL_MAX_BACKOFF)
        log(f"run {self.coordination_id}: result not delivered within {patience:.0f} s; giving up")


class Poller:
    """Ask for work every poll interval (jittered); run what is given, one at a time."""

    def __init__(self, args: argparse.Namespace, command: list):
        self.args = args
        self.command = command
        self.platform = Platform(args.poll, args.token, args.ca_bundle)
        self.stopped = threading.Event()
        self.current: PolledRun | None = None

    def stop(self) -> None:
        self.stopped.set()
        if self.current is not None:
            self.current.stopping.set()

    def poll_once(self) -> float:
        """One poll; returns how long to wait before the next."""
        interval = self.args.poll_interval
        body = {"environment_id": self.args.environment_id, "agent_version": VERSION}
        body["hostname"] = socket.gethostname()[:100]
        try:
            status, data, retry_after = self.platform.post("/api/agent/poll", body)
        except Unreachable as exc:
            log(f"poll: platform unreachable ({exc})")
            return POLL_MAX_BACKOFF / 4
        if status == 200:
            given = data.get("poll_interval")
            if isinstance(given, (int, float)) and not isinstance(given, bool) and 1 <= given <= 300:
                self.args.poll_interval = interval = float(given)
            if isinstance(data.get("run"), dict):
                self.execute(data["run"])
                return 0.0  # right after a run: more work may be waiting
            return interval * random.uniform(*POLL_JITTER)  # noqa: S311 (spread, not security)
        if status == 401:
            log(
                "poll: HTTP 401: the platform refused the agent token for this environment "
                "(check --token-file and --environment-id)"
            )
            return max(interval, POLL_REFUSED_WAIT)
        detail = str(data.get("detail", ""))[:200]
        log(f"poll: HTTP {status}{': ' + detail if detail else ''}")
        return retry_after or (POLL_MAX_BACKOFF if status in (409, 429) or status >= 500 else interval)

    def execute(self, run: dict) -> None:
        try:
            self.current = PolledRun(
                self.platform, run, self.command, self.args.working_directory, self.args.max_timeout
            )
        except OSError as exc:
            log(f"run {run.get('coordination_id')}: the script could not start: {exc}")
            return
        if self.stopped.is_set():
            self.current.stopping.set()
        try:
            self.current.execute()
        finally:
            self.current = None

    def forever(self) -> None:
        log(
            f"polling {urllib.parse.urlsplit(self.args.poll).netloc} as {self.args.environment_id}; "
            f"script {self.args.script}"
        )
        while not self.stopped.is_set():
            wait = self.poll_once()
            if wait:
                self.stopped.wait(wait)
        log("stopped")


def main_poll(args: argparse.Namespace, command: list) -> int:
    poller = Poller(args, command)

    def stop(signum, frame):
        log(f"signal {signum}: stopping")
        poller.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    poller.forever()
    return 0


def parse_arguments(argv: list | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="powerautomation_agent.py",
        description="Run this machine's init script when the PowerAutomation coordinator asks.",
    )
    parser.add_argument("--port", type=int, help="TCP port to listen on (the listening mode)")
    parser.add_argument(
        "--poll", metavar="URL", help="the platform's URL: poll it for work and open no port (the polling mode)"
    )
    parser.add_argument("--environment-id", help="with --poll: this machine's environment id on the platform")
    parser.add_argument("--ca-bundle", help="with --poll: CA certificates to verify the platform's TLS certificate")
    parser.add_argument(
        "--allow-http", action="store_true", help="with --poll: allow plain http:// to a host that is not loopback"
    )
    parser.add_argument("--script", required=True, help="the init script; the only program the agent runs")
    parser.add_argument("--token-file", required=True, help="file holding the bearer token for /api/deploy/init")
    parser.add_argument("--webhook-secret-file", help="file holding the webhook secret; enables /webhook/deploy")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--working-directory", help="where the script runs (default: the script's folder)")
    parser.add_argument("--interpreter", help="run [INTERPRETER, SCRIPT], e.g. Git Bash's bash.exe on Windows")
    parser.add_argument("--max-timeout", type=int, default=3600, help="upper bound on a run, seconds (default 3600)")
    parser.add_argument(
        "--state-file",
        help="where the webhook-ids seen in the last 10 minutes are kept across restarts "
        "(default: powerautomation-agent-webhook-ids.json beside the webhook secret file)",
    )
    args = parser.parse_args(argv)

    _check_mode(parser, args)
    if args.port is not None and not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: must be between 0 and 65535")
    if args.max_timeout <= 0:
        parser.error("--max-timeout: must be a positive number of seconds")
    args.script = os.path.abspath(args.script)
    if not os.path.isfile(args.script):
        parser.error(f"--script {args.script}: no such file")
    if args.interpreter is None and os.name != "nt" and not os.access(args.script, os.X_OK):
        parser.error(f"--script {args.script}: not executable (chmod +x it, or pass --interpreter /bin/bash)")
    if args.interpreter is not None and not os.path.isfile(args.interpreter):
        parser.error(f"--interpreter {args.interpreter}: no such file")
    args.working_directory = os.path.abspath(args.working_directory or os.path.dirname(args.script))
    if not os.path.isdir(args.working_directory):
        parser.error(f"--working-directory {args.working_directory}: no such directory")
    args.token = _read_secret(parser, "--token-file", args.token_file)
    args.webhook_secret = None
    if args.webhook_secret_file is not None:
        args.webhook_secret = _read_secret(parser, "--webhook-secret-file", args.webhook_secret_file)
        try:
            webhook_key(args.webhook_secret)
        except (binascii.Error, ValueError):
            parser.error(f"--webhook-secret-file {args.webhook_secret_file}: not a valid 'whsec_<base64>' secret")
        if args.state_file is None:
            folder = os.path.dirname(os.path.abspath(args.webhook_secret_file))
            args.state_file = os.path.join(folder, STATE_FILE_NAME)
        folder = os.path.dirname(os.path.abspath(args.state_file))
        if not os.access(folder, os.W_OK):
            parser.error(f"--state-file {args.state_file}: cannot write in {folder} (pass a writable --state-file)")
    return args


def _check_mode(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exactly one mode: --port (listen) or --poll URL (connect out only)."""
    if (args.port is None) == (args.poll is None):
        parser.error("give either --port (listen for triggers) or --poll URL (ask the platform for work)")
    if args.poll is None:
        for flag, value in (("--environment-id", args.environment_id), ("--ca-bundle", args.ca_bundle)):
            if value is not None:
                parser.error(f"{flag}: only with --poll")
        return
    if args.webhook_secret_file is not None:
        parser.error("--webhook-secret-file: not with --poll (nothing listens for webhooks)")
    parts = urllib.parse.urlsplit(args.poll)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        parser.error(f"--poll {args.poll}: must be an http:// or https:// URL")
    if parts.scheme == "http" and not args.allow_http and not is_loopback(parts.hostname):
        parser.error(
            f"--poll {args.poll}: plain http would send the agent token unencrypted; use https "
            "(or --allow-http on a network you trust)"
        )
    if not args.environment_id:
        parser.error("--environment-id: required with --poll")
    if args.ca_bundle is not None and not os.path.isfile(args.ca_bundle):
        parser.error(f"--ca-bundle {args.ca_bundle}: no such file")
    args.poll_interval = float(POLL_DEFAULT_INTERVAL)


def _read_secret(parser: argparse.ArgumentParser, flag: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read().strip()
    except FileNotFoundError:
        parser.error(f"{flag} {path}: no such file")
    except (OSError, UnicodeDecodeError) as exc:
        parser.error(f"{flag} {path}: cannot read it ({type(exc).__name__})")
    if not value:
        parser.error(f"{flag} {path}: the file is empty")
    return value


def main(argv: list | None = None) -> int:
    args = parse_arguments(argv)
    command = [args.interpreter, args.script] if args.interpreter else [args.script]
    if args.poll is not None:
        return main_poll(args, command)
    agent = Agent(
        command=command,
        working_directory=args.working_directory,
        token=args.token,
        webhook_secret=args.webhook_secret,
        max_timeout=args.max_timeout,
        state_file=args.state_file,
    )
    try:
        server = make_server(agent, args.bind, args.port)
    except OSError as exc:
        log(f"cannot listen on {args.bind}:{args.port}: {exc.strerror or exc}")
        return 1

    def stop(signum, frame):
        log(f"signal {signum}: stopping")
        # shutdown() waits for serve_forever(), which runs in this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    methods = "http_api and webhook" if agent.webhook_key else "http_api (webhook disabled)"
    log(f"listening on {host}:{port}; script {args.script}; {methods}")
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        agent.shutdown()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
