"""The local agent over webhook (Standard Webhooks v1), signed here by a signer written from the
spec text, independent of the agent's own code."""

import base64
import hashlib
import hmac
import json
import time

import pytest

from tests.support.agent import (
    BLOCKING_SCRIPT,
    DEFAULT_SCRIPT,
    launch_agent,
    run_agent_command,
    wait_until,
    write_script,
)

WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
PLAIN_SECRET = "a plain shared secret"
STATE_FILE_NAME = "powerautomation-agent-webhook-ids.json"  # the default, beside the secret file


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """A `v1,<base64>` signature: HMAC-SHA256 over `id.timestamp.body` with the secret's key."""
    key = base64.b64decode(secret[len("whsec_") :]) if secret.startswith("whsec_") else secret.encode("utf-8")
    content = webhook_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def test_the_signer_these_tests_use_reproduces_the_standard_webhooks_published_test_vector():
    """What the agent accepts below is then what the spec calls a valid signature."""
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.fixture
def webhook_body(trigger_body):
    def make(**overrides) -> bytes:
        body = trigger_body(event="ec2_deployment_completed", timeout=..., **overrides)
        return json.dumps(body).encode()

    return make


def deliver(
    agent,
    body: bytes,
    *,
    secret: str,
    webhook_id: str = "msg_2Kx9",
    timestamp: int | None = None,
    signature: str | None = None,
):
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature or sign(secret, webhook_id, timestamp, body),
    }
    return agent.post("/webhook/deploy", body, headers)


@pytest.mark.parametrize("secret", [WHSEC, PLAIN_SECRET], ids=["whsec", "plain"])
def test_signed_delivery_is_accepted_and_the_result_is_called_back(
    start_agent, webhook_body, callback_receiver, secret
):
    agent = start_agent(webhook_secret=secret)

    response = deliver(agent, webhook_body(), secret=secret)

    assert response.status == 202
    assert response.json == {"accepted": True, "coordination_id": "coord-42", "callback": True}
    [callback] = callback_receiver.wait_for_calls(1)
    assert callback.json["success"] is True
    assert "init output for coord-42" in callback.json["output"]
    assert agent.script_environment()["EC2_INSTANCE_ID"] == "i-0abc123"


def test_delivery_with_a_wrong_signature_is_refused_and_nothing_runs(start_agent, webhook_body):
    agent = start_agent(webhook_secret=WHSEC)
    body = webhook_body()

    response = deliver(
        agent, body, secret=WHSEC, signature=sign("whsec_" + "A" * 44, "msg_2Kx9", int(time.time()), body)
    )

    assert response.status == 401
    assert "signature" in response.json["error"]
    assert agent.health()["last"] is None
    assert agent.runs() == 0


def test_delivery_whose_body_was_changed_after_signing_is_refused(start_agent, webhook_body):
    agent = start_agent(webhook_secret=WHSEC)
    timestamp = int(time.time())
    signature = sign(WHSEC, "msg_2Kx9", timestamp, webhook_body())

    response = deliver(
        agent, webhook_body(deployment_version="v6.6.6"), secret=WHSEC, timestamp=timestamp, signature=signature
    )

    assert response.status == 401
    assert agent.runs() == 0


def test_delivery_without_signature_headers_is_refused(start_agent, webhook_body):
    agent = start_agent(webhook_secret=WHSEC)

    response = agent.post("/webhook/deploy", webhook_body(), {"Content-Type": "application/json"})

    assert response.status == 401
    assert agent.runs() == 0


def test_delivery_signed_ten_minutes_ago_is_refused_as_too_old(start_agent, webhook_body):
    agent = start_agent(webhook_secret=WHSEC)

    response = deliver(agent, webhook_body(), secret=WHSEC, timestamp=int(time.time()) - 600)

    assert response.status == 401
    assert "too old" in response.json["error"]
    assert agent.runs() == 0


def test_delivery_signed_ten_minutes_ahead_is_refused_as_from_the_future(start_agent, webhook_body):
    agent = start_agent(webhook_secret=WHSEC)

    response = deliver(agent, webhook_body(), secret=WHSEC, timestamp=int(time.time()) + 600)

    assert response.status == 401
    assert "future" in response.json["error"]


def test_replayed_webhook_id_is_refused_and_runs_once(start_agent, webhook_body, callback_receiver):
    agent = start_agent(webhook_secret=WHSEC)
    assert deliver(agent, webhook_body(), secret=WHSEC, webhook_id="msg_once").status == 202
    callback_receiver.wait_for_calls(1)
    agent.wait_idle()

    response = deliver(agent, webhook_body(), secret=WHSEC, webhook_id="msg_once")

    assert response.status == 409
    assert response.json == {"error": "duplicate delivery", "duplicate": True, "webhook_id": "msg_once"}
    assert agent.runs() == 1


def test_several_signatures_are_accepted_when_any_one_is_valid(start_agent, webhook_body, callback_receiver):
    agent = start_agent(webhook_secret=WHSEC)
    body = webhook_body()
    timestamp = int(time.time())
    old_key_signature = sign("whsec_" + base64.b64encode(b"k" * 32).decode(), "msg_rot", timestamp, body)
    signatures = f"{old_key_signature} {sign(WHSEC, 'msg_rot', timestamp, body)}"

    response = deliver(agent, body, secret=WHSEC, webhook_id="msg_rot", timestamp=timestamp, signature=signatures)

    assert response.status == 202
    callback_receiver.wait_for_calls(1)


def test_delivery_with_a_wrong_action_is_refused_naming_the_field(start_agent, webhook_body):
    agent = start_agent(webhook_secret=WHSEC)

    response = deliver(agent, webhook_body(action="format_disk"), secret=WHSEC)

    assert response.status == 400
    assert response.json["error"].startswith("action:")


def test_delivery_refused_as_busy_can_be_redelivered_with_the_same_id(start_agent, webhook_body, callback_receiver):
    agent = start_agent(BLOCKING_SCRIPT, webhook_secret=WHSEC)
    assert deliver(agent, webhook_body(coordination_id="first"), secret=WHSEC, webhook_id="msg_a").status == 202
    wait_until(lambda: agent.runs() == 1, message="first run started")

    busy = deliver(agent, webhook_body(coordination_id="second"), secret=WHSEC, webhook_id="msg_b")
    (agent.home / "release").touch()
    callback_receiver.wait_for_calls(1)
    agent.wait_idle()
    redelivered = deliver(agent, webhook_body(coordination_id="second"), secret=WHSEC, webhook_id="msg_b")

    assert busy.status == 409
    assert busy.json == {"error": "busy", "duplicate": False, "running_coordination_id": "first"}
    assert redelivered.status == 202
    callback_receiver.wait_for_calls(2)
    assert agent.runs() == 2


def test_a_delivery_replayed_after_the_agent_restarts_is_refused_and_runs_once(
    tmp_path, webhook_body, callback_receiver
):
    body, home = webhook_body(), tmp_path / "agent"
    first = launch_agent(home, tmp_path / "first.log", DEFAULT_SCRIPT, webhook_secret=WHSEC)
    try:
        first.wait_listening()
        timestamp = int(time.time())
        signature = sign(WHSEC, "msg_replayed", timestamp, body)
        replay = {"secret": WHSEC, "webhook_id": "msg_replayed", "timestamp": timestamp, "signature": signature}
        assert deliver(first, body, **replay).status == 202
        callback_receiver.wait_for_calls(1)
        first.wait_idle()
    finally:
        first.stop()
    second = launch_agent(home, tmp_path / "second.log", DEFAULT_SCRIPT, webhook_secret=WHSEC)
    try:
        second.wait_listening()

        response = deliver(second, body, **replay)

        assert response.status == 409
        assert response.json["error"] == "duplicate delivery"
        assert second.runs() == 1
    finally:
        second.stop()


def test_the_agent_refuses_to_start_when_it_cannot_keep_the_webhook_ids(tmp_path):
    script = write_script(tmp_path / "init_aicore.sh", DEFAULT_SCRIPT)
    (tmp_path / "token.txt").write_text("t\n")
    (tmp_path / "secret.txt").write_text(WHSEC + "\n")
    args = ["--port", "0", "--script", str(script), "--token-file", str(tmp_path / "token.txt")]
    args += ["--webhook-secret-file", str(tmp_path / "secret.txt"), "--state-file", "/nonexistent/ids.json"]

    result = run_agent_command(args)

    assert result.returncode == 2
    assert "--state-file /nonexistent/ids.json: cannot write" in result.stderr


def test_deeply_nested_signed_delivery_is_refused_and_nothing_runs(start_agent):
    agent = start_agent(webhook_secret=WHSEC)

    response = deliver(agent, b"{" * 60000, secret=WHSEC)

    assert response.status == 400
    assert "nested too deep" in response.json["error"]
    assert agent.runs() == 0


def start_with_state_file(tmp_path, content: bytes):
    """An agent whose default webhook-id file already holds `content`."""
    home = tmp_path / "agent"
    home.mkdir()
    (home / STATE_FILE_NAME).write_bytes(content)
    agent = launch_agent(home, tmp_path / "agent.log", DEFAULT_SCRIPT, webhook_secret=WHSEC)
    agent.wait_listening()
    return agent


@pytest.mark.parametrize(
    "content",
    [b"[" * 60000, b'{"msg_old": 1, "msg_old": 2}', b"\xff\xfe not utf-8"],
    ids=["too-deep", "duplicate-key", "not-utf-8"],
)
def test_an_unreadable_webhook_id_file_is_logged_and_ignored(tmp_path, webhook_body, callback_receiver, content):
    agent = start_with_state_file(tmp_path, content)
    try:
        assert deliver(agent, webhook_body(), secret=WHSEC).status == 202
        callback_receiver.wait_for_calls(1)
        assert "webhook-id file" in agent.log()
        assert "ignored" in agent.log()
    finally:
        agent.stop()


def test_a_webhook_id_file_over_2_mib_is_logged_and_ignored(tmp_path, webhook_body, callback_receiver):
    stored = {"msg_big": time.time(), "padding": "x" * (2 * 1024 * 1024)}
    agent = start_with_state_file(tmp_path, json.dumps(stored).encode())
    try:
        response = deliver(agent, webhook_body(), secret=WHSEC, webhook_id="msg_big")

        assert response.status == 202
        assert "larger than 2097152 bytes" in agent.log()
    finally:
        agent.stop()


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e400"])
def test_a_webhook_id_file_with_a_non_finite_time_is_ignored(tmp_path, webhook_body, callback_receiver, number):
    """A NaN or infinite time would never be pruned: the id would be refused for ever."""
    agent = start_with_state_file(tmp_path, f'{{"msg_forever": {number}}}'.encode())
    try:
        response = deliver(agent, webhook_body(), secret=WHSEC, webhook_id="msg_forever")

        assert response.status == 202
        assert "ignored" in agent.log()
    finally:
        agent.stop()


def test_the_webhook_id_file_is_not_written_through_a_planted_symlink(tmp_path, webhook_body, callback_receiver):
    home = tmp_path / "agent"
    home.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("do not overwrite\n")
    (home / f"{STATE_FILE_NAME}.tmp").symlink_to(victim)
    agent = launch_agent(home, tmp_path / "agent.log", DEFAULT_SCRIPT, webhook_secret=WHSEC)
    try:
        agent.wait_listening()

        assert deliver(agent, webhook_body(), secret=WHSEC, webhook_id="msg_linked").status == 202
        callback_receiver.wait_for_calls(1)

        assert victim.read_text() == "do not overwrite\n"
        state = home / STATE_FILE_NAME
        assert not state.is_symlink()
        assert "msg_linked" in json.loads(state.read_text())
        leftovers = {p.name for p in home.iterdir() if p.name.endswith(".tmp")}
        assert leftovers == {f"{STATE_FILE_NAME}.tmp"}  # only the planted link; no temp file left
    finally:
        agent.stop()
