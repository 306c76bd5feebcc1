"""The agent as a real process on loopback (tests.support.agent), a real callback receiver,
and trigger bodies.

Nothing here touches the database or imports Django models."""

import pytest

from tests.support.agent import DEFAULT_SCRIPT, AgentProcess, CallbackReceiver, launch_agent


@pytest.fixture
def callback_receiver():
    receiver = CallbackReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def start_agent(tmp_path, callback_receiver):
    """Start the agent with `script` (a /bin/sh body) as its init script; stopped at the end,
    before the callback receiver, so a last callback still finds it."""
    started: list[AgentProcess] = []

    def start(script: str = DEFAULT_SCRIPT, *, webhook_secret: str | None = None, args=()) -> AgentProcess:
        home = tmp_path / f"agent-{len(started)}"
        log_path = tmp_path / f"agent-{len(started)}.log"
        agent = launch_agent(home, log_path, script, webhook_secret=webhook_secret, args=args)
        started.append(agent)
        agent.wait_listening()
        return agent

    yield start
    for agent in started:
        (agent.home / "release").touch()
        agent.stop()


@pytest.fixture
def agent(start_agent):
    return start_agent()


@pytest.fixture
def trigger_body(callback_receiver):
    def make(**overrides) -> dict:
        body = {
            "action": "init_local_environment",
            "script_path": "./init_aicore.sh",
            "working_directory": "/nonexistent",
            "environment_id": "mac-studio-1",
            "coordination_id": "coord-42",
            "ec2_instance_id": "i-0abc123",
            "ec2_public_ip": "127.0.0.1",
            "deployment_version": "v2.3.1",
            "timeout": 30,
            "timestamp": "2026-11-23T10:00:00Z",
            "callback_url": callback_receiver.url(),
        }
        body.update(overrides)
        return {k: v for k, v in body.items() if v is not ...}

    return make
