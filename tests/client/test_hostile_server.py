"""The client against a hostile or broken server (loopback HTTP servers in this process,
no database): every answer is read to a bound, one it cannot use is a clear error (exit
5), a redirect is never followed with the token, the token is never printed or logged,
bad flags are exit 2 naming the flag, and POWERAUTOMATION_CA_BUNDLE is what TLS trusts."""

import json
import logging
import ssl
import sys
import time

import pytest

from tests.support.client_venv import CLIENT
from tests.support.http import Answer, HTTPServer, finishes
from tests.support.tls import self_signed

sys.path.insert(0, str(CLIENT / "src"))
from powerautomation_client import api, cli, errors  # noqa: E402
from powerautomation_client.config import load_config  # noqa: E402

TOKEN = "f00dfeed" * 8
VERSION = Answer(200, json.dumps({"api_version": "1.0.0"}))
STATUS = json.dumps({"active": [], "active_count": 0})


@pytest.fixture(autouse=True)
def _environment(monkeypatch):
    monkeypatch.setenv("POWERAUTOMATION_TOKEN", TOKEN)
    for name in ("POWERAUTOMATION_URL", "POWERAUTOMATION_CA_BUNDLE", "POWERAUTOMATION_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(api, "RETRY_DELAYS", (0.0,))


def run(url: str, *args: str, capsys) -> tuple[int, str, str]:
    code = finishes(lambda: cli.main(["--url", url, *args]), within=20)
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    return code, out, err


@pytest.fixture
def platform(http_server):
    """A server that passes the version check; each test scripts the rest."""
    http_server.answer("/api/version", VERSION)
    return http_server


@pytest.mark.parametrize("size", [50 * 1024 * 1024, None], ids=["content-length", "endless-chunked"])
def test_a_huge_answer_is_cut_off_at_the_cap(huge_body_server, monkeypatch, size, capsys):
    monkeypatch.setattr(api, "MAX_ANSWER_BYTES", 1024 * 1024)
    server = huge_body_server(size=size)

    code, out, err = run(server.url(""), "status", capsys=capsys)

    assert (code, out) == (errors.EXIT_UNAVAILABLE, "")
    assert "the platform's answer is" in err and "over 1048576" in err and "refused" in err
    assert server.sent < 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (Answer(200, "<html>a login page</html>", headers={"Content-Type": "text/html"}), "is text, not a JSON object"),
        (Answer(200, "{not json"), "is text, not a JSON object"),
        (Answer(200, "[" * 100_000 + "]" * 100_000), "is text, not a JSON object"),  # past the recursion limit
        (Answer(200, "[]"), "is list, not a JSON object"),
        (Answer(200, json.dumps({"api_version": 1})), "has no valid 'api_version'"),
    ],
    ids=["html", "broken-json", "deep-json", "list", "wrong-type"],
)
def test_a_version_answer_that_is_not_the_platforms_is_exit_5(http_server, answer, message, capsys):
    http_server.answer("/api/version", answer)

    code, out, err = run(http_server.url(""), "status", capsys=capsys)

    assert (code, out) == (errors.EXIT_UNAVAILABLE, ""), err
    assert err.startswith("powerautomation: the platform's answer to GET /api/version ") and message in err


@pytest.mark.parametrize(
    ("path", "args", "body"),
    [
        ("/api/deployment/status", ["status"], {"active": "everything"}),
        ("/api/deployment/status", ["status"], {"active": [{"coordination_id": "x"}]}),  # a record without fields
        ("/api/deployment/history?limit=10", ["history"], {"results": None}),
        ("/api/deployment/coordinations/x/", ["status", "x"], {"coordination_id": "x"}),
        ("/api/deployment/coordinations/x/cancel/", ["cancel", "x"], {"ok": True}),
        ("/api/deployment/environments?limit=500", ["environments", "list"], {"results": [], "next": 7}),
        ("/api/deployment/config", ["environments", "export"], {"environments": {}}),
    ],
)
def test_a_200_of_the_wrong_shape_is_exit_5_not_a_traceback(platform, path, args, body, capsys):
    platform.answer(path, Answer(200, json.dumps(body)))

    code, out, err = run(platform.url(""), *args, capsys=capsys)

    assert (code, out) == (errors.EXIT_UNAVAILABLE, ""), err
    assert err.startswith("powerautomation: the platform's answer ") and "Traceback" not in err


def test_events_that_do_not_move_on_and_endless_pages_are_refused(platform, monkeypatch):
    client = api.Client(load_config(url=platform.url(""), token=TOKEN, environ={}))
    page = {"events": [{"id": 5}], "has_more": True, "finished": False, "next_after": 5, "coordination_status": "x"}
    platform.answer("/api/deployment/coordinations/x/events/?after=5&limit=500", Answer(200, json.dumps(page)))
    platform.answer(
        "/api/deployment/coordinations/y/events/?after=0&limit=500", Answer(200, json.dumps({**page, "events": []}))
    )
    endless = {"results": [{"environment_id": "a"}], "next": "http://elsewhere/api/deployment/environments?c=1"}
    platform.answer("/api/deployment/environments?limit=500", Answer(200, json.dumps(endless)))
    platform.answer("/api/deployment/environments?c=1", Answer(200, json.dumps(endless)))

    with pytest.raises(errors.BadAnswerError, match="repeats event 5"):
        client.events("x", after=5)
    with pytest.raises(errors.BadAnswerError, match="has more events but gives none"):
        client.events("y")
    monkeypatch.setattr(api, "MAX_PAGES", 3)
    with pytest.raises(errors.BadAnswerError, match="goes on past 3 pages"):
        list(client.environments())
    # `next` keeps its path only: the pages came from this server, none from "elsewhere".
    assert platform.paths().count("/api/deployment/environments?c=1") == 2


def test_retry_after_far_away_is_not_waited_for_and_a_negative_one_is_now(platform, capsys):
    platform.answer("/api/deployment/status", Answer(429, "{}", headers={"Retry-After": "1000000000"}))
    platform.answer(
        "/api/deployment/history?limit=10",
        Answer(429, "{}", headers={"Retry-After": "-5"}),
        Answer(200, json.dumps({"results": []})),
    )

    started = time.monotonic()
    far = run(platform.url(""), "status", capsys=capsys)
    negative = run(platform.url(""), "history", capsys=capsys)

    assert far[0] == errors.EXIT_UNAVAILABLE and platform.paths().count("/api/deployment/status") == 1
    assert negative == (0, "no finished coordinations\n", "")
    assert time.monotonic() - started < 10  # neither waited (10^9 s, or a sleep of -5 s that raises)


def test_a_redirect_is_not_followed_so_the_token_goes_nowhere_else(platform, capsys):
    elsewhere = HTTPServer()
    try:
        elsewhere.answer("/api/deployment/status", Answer(200, STATUS))
        platform.answer(
            "/api/deployment/status", Answer(302, "", headers={"Location": elsewhere.url("/api/deployment/status")})
        )
        platform.answer(
            "/api/deployment/trigger-local", Answer(307, "", headers={"Location": "/api/deployment/trigger-local/"})
        )

        moved = run(platform.url(""), "status", capsys=capsys)
        same_host = run(platform.url(""), "trigger-local", capsys=capsys)
    finally:
        elsewhere.close()

    assert moved[0] == errors.EXIT_BAD_INPUT
    assert f"answered 302 to http://127.0.0.1:{elsewhere.port}; set the address it moved to" in moved[2]
    assert elsewhere.requests == []
    assert same_host[0] == errors.EXIT_BAD_INPUT and "answered 307" in same_host[2]
    assert platform.paths().count("/api/deployment/trigger-local/") == 0


def test_the_token_is_never_printed_logged_or_in_a_repr(platform, caplog, capsys):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's too
    platform.answer(
        "/api/deployment/status",
        Answer(429, "{}", headers={"Retry-After": "0"}),
        Answer(401, json.dumps({"detail": f"Invalid token {TOKEN}."})),
    )
    platform.answer("/api/deployment/history?limit=10", Answer(500, f"proxy error for Token {TOKEN}"))

    refused = run(platform.url(""), "status", "--json", capsys=capsys)
    failed = run(platform.url(""), "history", "--json", capsys=capsys)
    client = api.Client(load_config(url=platform.url(""), token=TOKEN, environ={}))
    with pytest.raises(errors.AuthenticationError) as raised:
        client.status()

    assert refused == (errors.EXIT_REFUSED, "", "powerautomation: Invalid token ***.\n")
    assert failed[0] == errors.EXIT_UNAVAILABLE and "Token ***" in failed[2]
    assert "Authorization" in platform.requests[-1].headers  # it was sent
    shown = [repr(raised.value), str(raised.value), repr(raised.value.body), repr(client.config)]
    shown += [repr(client.session.auth), repr(client.session.headers), caplog.text]
    assert [text for text in shown if TOKEN in text] == []


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["history", "--limit", "-1"], "--limit"),
        (["history", "--limit", "abc"], "--limit"),
        (["history", "--limit", "501"], "--limit"),
        (["trigger-local", "--wait", "--timeout", "nan"], "--timeout"),
        (["trigger-local", "--wait", "--timeout", "inf"], "--timeout"),
        (["trigger-local", "--wait", "--timeout", "1e12"], "--timeout"),
        (["status", "x" * 101], "ID"),
    ],
)
def test_a_bad_flag_is_exit_2_naming_it_and_sends_nothing(platform, args, flag, capsys):
    code, out, err = run(platform.url(""), *args, capsys=capsys)

    assert (code, out) == (errors.EXIT_BAD_INPUT, "")
    assert f"argument {flag}" in err
    assert platform.requests == []


def test_tls_trusts_the_private_ca_in_powerautomation_ca_bundle(tmp_path, monkeypatch, capsys):
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = HTTPServer(tls=context)
    try:
        server.answer("/api/version", VERSION)
        server.answer("/api/deployment/status", Answer(200, STATUS))
        untrusted = run(server.url(""), "status", capsys=capsys)
        monkeypatch.setenv("POWERAUTOMATION_CA_BUNDLE", str(cert))
        # A REQUESTS_CA_BUNDLE on the machine must not replace the platform's CA.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "key.pem"))
        trusted = run(server.url(""), "status", capsys=capsys)
        monkeypatch.setenv("POWERAUTOMATION_CA_BUNDLE", str(tmp_path / "missing.pem"))
        missing = run(server.url(""), "status", capsys=capsys)
    finally:
        server.close()

    assert untrusted[0] == errors.EXIT_UNAVAILABLE
    assert f"TLS to {server.url('')} failed: SSLError (POWERAUTOMATION_CA_BUNDLE?)" in untrusted[2]
    assert trusted == (0, "no active coordinations\n", "")
    assert missing[0] == errors.EXIT_BAD_INPUT
    assert "POWERAUTOMATION_CA_BUNDLE: no file" in missing[2]
    assert server.paths() == ["/api/version", "/api/deployment/status"]  # the trusted run's only
