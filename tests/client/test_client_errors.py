"""The client's configuration and its answers to a platform that does not fit, is over
its limit, fails or is away: each a clear message and a documented exit code. Against
loopback HTTP servers, in this process (the client imports no Django)."""

import json
import sys

import pytest

from tests.support.client_venv import CLIENT
from tests.support.http import Answer
from tests.support.ports import free_port

sys.path.insert(0, str(CLIENT / "src"))
from powerautomation_client import api, cli, errors  # noqa: E402
from powerautomation_client.config import load_config  # noqa: E402

TOKEN = "0123456789abcdef-secret-token"
VERSION = Answer(200, json.dumps({"api_version": "1.0.0"}))
STATUS = json.dumps({"active": [], "active_count": 0})


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(api, "RETRY_DELAYS", (0.0, 0.0))


def run(url: str, *args: str, capsys) -> tuple[int, str, str]:
    code = cli.main(["--url", url, *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _token(monkeypatch):
    monkeypatch.setenv("POWERAUTOMATION_TOKEN", TOKEN)


def test_a_platform_of_another_major_api_version_is_refused_naming_both(http_server, capsys):
    http_server.answer("/api/version", Answer(200, json.dumps({"api_version": "2.1.0"})))

    code, out, err = run(http_server.url(""), "status", capsys=capsys)

    assert code == errors.EXIT_BAD_INPUT
    assert "the platform's API is version 2.1.0; powerautomation-client 1.0.0 fits API 1.x only" in err
    assert http_server.paths() == ["/api/version"]  # nothing else was asked


def test_a_429_is_retried_after_retry_after_and_a_5xx_read_with_backoff(http_server, no_backoff, capsys):
    http_server.answer("/api/version", VERSION)
    http_server.answer(
        "/api/deployment/status",
        Answer(429, "{}", headers={"Retry-After": "0"}),
        Answer(503, "{}"),
        Answer(200, STATUS),
    )

    code, out, err = run(http_server.url(""), "status", capsys=capsys)

    assert (code, out) == (0, "no active coordinations\n"), err
    assert http_server.paths().count("/api/deployment/status") == 3
    assert all(request.headers["Authorization"] == f"Token {TOKEN}" for request in http_server.requests)


def test_a_5xx_that_lasts_exits_5_and_a_401_exits_4(http_server, no_backoff, capsys):
    http_server.answer("/api/version", VERSION)
    http_server.answer(
        "/api/deployment/status", Answer(500, "<html>oops</html>", headers={"Content-Type": "text/html"})
    )
    http_server.answer("/api/deployment/history?limit=10", Answer(401, json.dumps({"detail": "Invalid token."})))

    server_error = run(http_server.url(""), "status", capsys=capsys)
    refused = run(http_server.url(""), "history", capsys=capsys)

    assert server_error[0] == errors.EXIT_UNAVAILABLE and "HTTP 500" in server_error[2]
    assert refused == (errors.EXIT_REFUSED, "", "powerautomation: Invalid token.\n")
    assert TOKEN not in server_error[2] + refused[2]


def test_an_unreachable_platform_exits_5_without_the_token(no_backoff, capsys):
    code, out, err = run(f"http://127.0.0.1:{free_port()}", "status", capsys=capsys)

    assert code == errors.EXIT_UNAVAILABLE
    assert "is unreachable (ConnectionError)" in err and TOKEN not in err


def test_the_trigger_sends_an_idempotency_key_and_its_retry_sends_the_same(http_server, no_backoff, capsys):
    http_server.answer("/api/version", VERSION)
    accepted = json.dumps({"coordination_id": "deploy_1", "status": "pending", "environments": ["a"]})
    http_server.answer("/api/deployment/trigger-local", Answer(502, "{}"), Answer(202, accepted))

    code, out, err = run(http_server.url(""), "trigger-local", capsys=capsys)

    assert (code, out) == (0, "🚀 queued deploy_1 (follow it with: powerautomation status deploy_1)\n"), err
    keys = [r.headers.get("Idempotency-Key") for r in http_server.requests if r.path.endswith("trigger-local")]
    assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) == 36


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "POWERAUTOMATION_URL (or --url)"),
        ({"url": "ftp://x"}, "--url: must be an http:// or https:// URL"),
        ({"url": "https://user:pw@x"}, "--url: put no credentials in the URL"),
        ({"url": "https://x", "token": "a b"}, "token: the token has spaces"),
        ({"url": "https://x", "token_file": "/nonexistent/token"}, "--token-file: cannot read"),
        ({"url": "https://x", "token": "t", "ca_bundle": "/nonexistent/ca.pem"}, "POWERAUTOMATION_CA_BUNDLE: no file"),
    ],
)
def test_bad_configuration_is_refused_naming_the_setting(kwargs, message):
    with pytest.raises(errors.ConfigurationError) as raised:
        load_config(environ={}, **kwargs)
    assert raised.value.message.startswith(message)


def test_the_token_is_in_no_repr():
    config = load_config(url="https://coordinator.example/api/", token=TOKEN, environ={})
    assert config.url == "https://coordinator.example"
    assert TOKEN not in repr(config)
