"""The local agent over http_api: a real agent process, a real callback receiver, loopback only."""

import json
import signal
import sys
import time

import pytest

from tests.support.agent import AGENT, BLOCKING_SCRIPT, TOKEN, request, run_agent_command, wait_until, write_script


def test_trigger_is_accepted_and_the_result_is_called_back(agent, trigger_body, callback_receiver):
    response = agent.trigger(trigger_body())

    assert response.status == 202
    assert response.json == {"accepted": True, "coordination_id": "coord-42", "callback": True}
    [callback] = callback_receiver.wait_for_calls(1)
    assert callback.path == "/api/callbacks/one-time-token-123/"
    assert callback.headers["Content-Type"] == "application/json"
    assert callback.json["success"] is True
    assert callback.json["exit_code"] == 0
    assert "init output for coord-42" in callback.json["output"]
    assert "a line on stderr" in callback.json["output"]
    assert set(callback.json) == {"success", "exit_code", "output"}


def test_script_sees_the_deployment_in_its_environment(agent, trigger_body, callback_receiver):
    agent.trigger(trigger_body())
    callback_receiver.wait_for_calls(1)

    assert agent.script_environment() == {
        "EC2_INSTANCE_ID": "i-0abc123",
        "EC2_PUBLIC_IP": "127.0.0.1",
        "DEPLOYMENT_VERSION": "v2.3.1",
        "COORDINATION_ID": "coord-42",
        "ENVIRONMENT_ID": "mac-studio-1",
    }


def test_script_path_in_the_request_is_ignored(agent, trigger_body, callback_receiver, tmp_path):
    other = write_script(tmp_path / "other.sh", f"touch {tmp_path / 'other-ran'}\n")

    response = agent.trigger(trigger_body(script_path=str(other), working_directory=str(tmp_path)))

    assert response.status == 202
    callback_receiver.wait_for_calls(1)
    assert agent.runs() == 1
    assert not (tmp_path / "other-ran").exists()


def test_interpreter_runs_a_script_that_is_not_executable(start_agent, trigger_body, callback_receiver, tmp_path):
    script = write_script(tmp_path / "plain.sh", 'echo "via interpreter $0"\n', executable=False)
    agent = start_agent(args=["--script", str(script), "--interpreter", "/bin/sh"])

    assert agent.trigger(trigger_body()).status == 202

    [callback] = callback_receiver.wait_for_calls(1)
    assert callback.json["exit_code"] == 0
    assert f"via interpreter {script}" in callback.json["output"]


def test_failing_script_is_reported_with_its_exit_code(start_agent, trigger_body, callback_receiver):
    agent = start_agent("echo 'something broke'\nexit 3\n")

    agent.trigger(trigger_body())

    [callback] = callback_receiver.wait_for_calls(1)
    assert callback.json["success"] is False
    assert callback.json["exit_code"] == 3
    assert "something broke" in callback.json["output"]


def test_script_past_its_timeout_is_killed_and_reported_as_minus_one(start_agent, trigger_body, callback_receiver):
    agent = start_agent("echo started\nsleep 2\necho late > marker.txt\n")
    started = time.monotonic()

    agent.trigger(trigger_body(timeout=1))

    [callback] = callback_receiver.wait_for_calls(1)
    assert callback.json["success"] is False
    assert callback.json["exit_code"] == -1
    assert "started" in callback.json["output"]
    assert "timed out after 1 s" in callback.json["output"]
    # Past the moment the script would have written its marker had it (or its sleep) survived.
    time.sleep(max(0.0, started + 2.5 - time.monotonic()))
    assert not (agent.home / "marker.txt").exists()
    assert agent.health()["last"]["timed_out"] is True


def test_request_timeout_is_capped_by_max_timeout(start_agent, trigger_body, callback_receiver):
    agent = start_agent("sleep 5\n", args=["--max-timeout", "1"])

    agent.trigger(trigger_body(timeout=600))

    [callback] = callback_receiver.wait_for_calls(1)
    assert callback.json["exit_code"] == -1
    assert "timed out after 1 s" in callback.json["output"]


def test_output_beyond_64_kib_keeps_only_the_tail(start_agent, trigger_body, callback_receiver):
    agent = start_agent("seq 1 30000\n")  # about 170 KB

    agent.trigger(trigger_body())

    [callback] = callback_receiver.wait_for_calls(1)
    output = callback.json["output"]
    assert len(output.encode()) == 64 * 1024
    assert output.endswith("\n29999\n30000\n")
    assert not output.startswith("1\n2\n")


def test_script_that_cannot_be_started_is_an_error_and_nothing_is_running(agent, trigger_body, callback_receiver):
    (agent.home / "init_aicore.sh").unlink()

    response = agent.trigger(trigger_body())

    assert response.status == 500
    assert response.json["error"].startswith("could not start the script")
    assert agent.health()["running"] is None
    assert callback_receiver.calls == []


def test_missing_token_is_refused_and_nothing_runs(agent, trigger_body):
    response = agent.trigger(trigger_body(), token=None)

    assert response.status == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert agent.health() == {"status": "ok", "running": None, "last": None}
    assert agent.runs() == 0


def test_wrong_token_is_refused_and_nothing_runs(agent, trigger_body):
    response = agent.trigger(trigger_body(), token=TOKEN + "x")

    assert response.status == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert agent.health()["last"] is None
    assert agent.runs() == 0


def test_body_that_is_not_json_is_refused(agent):
    response = agent.trigger(b"{not json")

    assert response.status == 400
    assert response.json["error"].startswith("body:")


def test_deeply_nested_body_is_refused_and_the_agent_keeps_answering(agent):
    """Plain json.loads raised RecursionError here and the agent dropped the connection."""
    response = agent.trigger(b"[" * 60000)

    assert response.status == 400
    assert response.json["error"].startswith("body:")
    assert "nested too deep" in response.json["error"]
    assert agent.health()["running"] is None


def test_body_with_a_duplicate_key_is_refused_naming_the_key(agent, trigger_body):
    body = json.dumps(trigger_body())[:-1] + ', "action": "reboot"}'

    response = agent.trigger(body.encode())

    assert response.status == 400
    assert response.json["error"] == "body: duplicate key 'action'"
    assert agent.runs() == 0


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_body_with_a_non_finite_number_is_refused(agent, trigger_body, number):
    body = json.dumps(trigger_body())[:-1] + f', "extra": {number}}}'

    response = agent.trigger(body.encode())

    assert response.status == 400
    assert response.json["error"].startswith("body:")
    assert number in response.json["error"]
    assert agent.runs() == 0


def test_body_that_is_not_an_object_is_refused(agent):
    response = agent.trigger(["init_local_environment"])

    assert response.status == 400
    assert response.json["error"].startswith("body:")


def test_wrong_action_is_refused_naming_the_field(agent, trigger_body):
    response = agent.trigger(trigger_body(action="reboot"))

    assert response.status == 400
    assert response.json["error"].startswith("action:")
    assert agent.runs() == 0


@pytest.mark.parametrize("timeout", [0, -5, "60", 1.5, True])
def test_timeout_that_is_not_a_positive_integer_is_refused(agent, trigger_body, timeout):
    response = agent.trigger(trigger_body(timeout=timeout))

    assert response.status == 400
    assert response.json["error"].startswith("timeout:")


def test_string_field_that_is_not_a_string_is_refused(agent, trigger_body):
    response = agent.trigger(trigger_body(ec2_public_ip=5))

    assert response.status == 400
    assert response.json["error"].startswith("ec2_public_ip:")


def test_string_field_over_1000_characters_is_refused(agent, trigger_body):
    response = agent.trigger(trigger_body(deployment_version="v" * 1001))

    assert response.status == 400
    assert response.json["error"].startswith("deployment_version:")


def test_callback_url_that_is_not_http_is_refused(agent, trigger_body):
    response = agent.trigger(trigger_body(callback_url="file:///etc/passwd"))

    assert response.status == 400
    assert response.json["error"].startswith("callback_url:")


def test_body_over_64_kib_is_refused(agent, trigger_body):
    response = agent.trigger(trigger_body(padding="x" * (64 * 1024)))

    assert response.status == 413
    assert agent.runs() == 0


def test_second_trigger_while_one_runs_is_busy(start_agent, trigger_body, callback_receiver):
    agent = start_agent(BLOCKING_SCRIPT)
    assert agent.trigger(trigger_body(coordination_id="first")).status == 202
    wait_until(lambda: agent.runs() == 1, message="first run started")

    response = agent.trigger(trigger_body(coordination_id="second"))

    assert response.status == 409
    assert response.json == {"error": "busy", "duplicate": False, "running_coordination_id": "first"}
    (agent.home / "release").touch()
    callback_receiver.wait_for_calls(1)
    assert agent.runs() == 1


def test_same_idempotency_key_while_running_is_accepted_again_without_a_second_run(
    start_agent, trigger_body, callback_receiver
):
    agent = start_agent(BLOCKING_SCRIPT)
    assert agent.trigger(trigger_body(), Idempotency_Key="coord-42:mac-studio-1:1").status == 202
    wait_until(lambda: agent.runs() == 1, message="first run started")

    response = agent.trigger(trigger_body(), Idempotency_Key="coord-42:mac-studio-1:1")

    assert response.status == 202
    assert response.json == {"accepted": True, "duplicate": True, "coordination_id": "coord-42", "callback": True}
    (agent.home / "release").touch()
    callback_receiver.wait_for_calls(1)
    agent.wait_idle()
    assert agent.runs() == 1
    assert len(callback_receiver.calls) == 1


def test_same_idempotency_key_as_the_last_finished_run_is_accepted_again_without_a_run(
    agent, trigger_body, callback_receiver
):
    agent.trigger(trigger_body(), Idempotency_Key="key-1")
    callback_receiver.wait_for_calls(1)
    agent.wait_idle()

    response = agent.trigger(trigger_body(), Idempotency_Key="key-1")

    assert response.status == 202
    assert response.json["duplicate"] is True
    assert agent.runs() == 1


def test_new_idempotency_key_after_a_finished_run_starts_a_new_run(agent, trigger_body, callback_receiver):
    agent.trigger(trigger_body(), Idempotency_Key="key-1")
    callback_receiver.wait_for_calls(1)
    agent.wait_idle()

    response = agent.trigger(trigger_body(coordination_id="coord-43"), Idempotency_Key="key-2")

    assert response.status == 202
    assert "duplicate" not in response.json
    callback_receiver.wait_for_calls(2)
    assert agent.runs() == 2


def test_health_reports_an_idle_agent(agent):
    assert agent.health() == {"status": "ok", "running": None, "last": None}


def test_health_reports_the_running_coordination_then_the_last_result(start_agent, trigger_body, callback_receiver):
    agent = start_agent(BLOCKING_SCRIPT)
    agent.trigger(trigger_body())
    wait_until(lambda: agent.runs() == 1, message="run started")

    assert agent.health()["running"] == "coord-42"

    (agent.home / "release").touch()
    callback_receiver.wait_for_calls(1)
    last = wait_until(lambda: agent.health()["last"].get("callback") == "delivered" and agent.health()["last"])
    assert last["coordination_id"] == "coord-42"
    assert last["success"] is True
    assert last["exit_code"] == 0
    assert agent.health()["running"] is None


def test_callback_is_retried_after_a_server_error(agent, trigger_body, callback_receiver):
    callback_receiver.statuses = [500]

    agent.trigger(trigger_body())

    first, second = callback_receiver.wait_for_calls(2)
    assert first.json == second.json
    assert second.json["success"] is True
    wait_until(lambda: agent.health()["last"].get("callback") == "delivered", message="callback delivered")


def test_callback_answered_404_is_not_retried(agent, trigger_body, callback_receiver):
    callback_receiver.statuses = [404]

    agent.trigger(trigger_body())

    callback_receiver.wait_for_calls(1)
    wait_until(lambda: agent.health()["last"].get("callback", "").startswith("rejected (404"))
    time.sleep(1.3)  # past the first backoff
    assert len(callback_receiver.calls) == 1


def test_log_names_requests_but_never_the_token_or_callback_url(agent, trigger_body, callback_receiver):
    agent.trigger(trigger_body())
    agent.trigger(trigger_body(), token="a-wrong-token-value")
    callback_receiver.wait_for_calls(1)
    agent.wait_idle()

    log = agent.log()
    assert "POST /api/deploy/init 202" in log
    assert "POST /api/deploy/init 401" in log
    assert TOKEN not in log
    assert "a-wrong-token-value" not in log
    assert "one-time-token-123" not in log


def test_unknown_path_is_not_found(agent):
    assert request(agent.port, "GET", "/api/deploy/other").status == 404


def test_wrong_method_is_not_allowed(agent):
    response = request(agent.port, "GET", "/api/deploy/init")

    assert response.status == 405
    assert response.headers["allow"] == "POST"
    assert request(agent.port, "POST", "/health", b"{}").status == 405


def test_webhook_endpoint_is_not_found_without_a_webhook_secret(agent, trigger_body):
    response = agent.post("/webhook/deploy", trigger_body(), {"webhook-id": "msg_1"})

    assert response.status == 404
    assert agent.runs() == 0


def test_sigterm_stops_the_agent_cleanly(agent):
    agent.process.send_signal(signal.SIGTERM)

    assert agent.process.wait(timeout=15) == 0
    assert "stopped" in agent.log()


def test_stopping_the_agent_kills_the_running_script_and_reports_it(start_agent, trigger_body, callback_receiver):
    agent = start_agent("echo started >> runs.txt\nsleep 10\necho late > marker.txt\n")
    agent.trigger(trigger_body())
    wait_until(lambda: agent.runs() == 1, message="run started")

    agent.process.send_signal(signal.SIGTERM)

    [callback] = callback_receiver.wait_for_calls(1)
    assert callback.json["exit_code"] == -1
    assert "agent was stopped" in callback.json["output"]
    assert agent.process.wait(timeout=15) == 0


@pytest.fixture
def startup_files(tmp_path):
    script = write_script(tmp_path / "init_aicore.sh", "echo hi\n")
    token = tmp_path / "token.txt"
    token.write_text(TOKEN)
    return script, token


@pytest.mark.parametrize("token_args", [[], ["--token-file", "/nonexistent/token.txt"]], ids=["omitted", "missing"])
def test_agent_refuses_to_start_without_a_token_file(startup_files, token_args):
    script, _ = startup_files

    result = run_agent_command(["--port", "0", "--script", str(script), *token_args])

    assert result.returncode == 2
    assert "--token-file" in result.stderr


def test_agent_refuses_to_start_with_an_empty_token_file(startup_files, tmp_path):
    script, _ = startup_files
    (tmp_path / "empty.txt").write_text(" \n")

    result = run_agent_command(["--port", "0", "--script", str(script), "--token-file", str(tmp_path / "empty.txt")])

    assert result.returncode == 2
    assert "--token-file" in result.stderr
    assert "empty" in result.stderr


def test_agent_refuses_to_start_with_a_missing_script(startup_files, tmp_path):
    _, token = startup_files

    result = run_agent_command(["--port", "0", "--script", str(tmp_path / "nope.sh"), "--token-file", str(token)])

    assert result.returncode == 2
    assert "--script" in result.stderr


def test_agent_refuses_to_start_with_an_empty_webhook_secret_file(startup_files, tmp_path):
    script, token = startup_files
    (tmp_path / "secret.txt").write_text("")

    result = run_agent_command(
        ["--port", "0", "--script", str(script), "--token-file", str(token)]
        + ["--webhook-secret-file", str(tmp_path / "secret.txt")]
    )

    assert result.returncode == 2
    assert "--webhook-secret-file" in result.stderr


def test_agent_is_a_single_standard_library_file():
    source = AGENT.read_text()
    imported = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from ")) and not line.startswith("from __future__")
    }

    assert imported <= set(sys.stdlib_module_names)
