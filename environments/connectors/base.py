"""The one interface every connection method implements.

A connector takes a plain description of the target and the deployment context, runs the
environment's init script, and reports through a `Reporter`. It imports nothing from
`deployments` and touches no model, so each is tested against a real server on its own.
"""

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from environments import bounds


@dataclass(frozen=True)
class Target:
    """Everything a connector needs to know about one environment."""

    environment_id: str
    connection_method: str
    host: str = ""
    port: int = 22
    username: str = ""
    ssh_key_path: str = ""
    password: str = field(default="", repr=False)
    api_token: str = field(default="", repr=False)
    webhook_secret: str = field(default="", repr=False)
    api_endpoint: str = ""
    webhook_url: str = ""
    init_script_path: str = "./init_aicore.sh"
    working_directory: str = ""
    health_check_url: str = ""
    timeout: int = 300
    host_key: str = ""
    # Polling agents: how often the agent asks for work, and when it last did.
    poll_interval: int = 5
    agent_token_hash: str = field(default="", repr=False)
    agent_seen_at: datetime | None = None
    # SSH: run the script detached (it outlives the session; environments.connectors.
    # ssh_detached), and where its run directories are on the machine ("" = the default).
    detach: bool = True
    run_directory: str = ""

    @classmethod
    def of(cls, environment: object, *, detach: bool = True, run_directory: str = "") -> "Target":
        """The target of an environment row (read by attribute: connectors touch no model).
        Its timeout is clamped: a stored value beyond the bound cannot overflow a deadline.
        `detach` and `run_directory` come from the coordination's settings
        (DeploymentDefaults.detach_for decides `detach`)."""
        values = {name: getattr(environment, name) for name in cls.__dataclass_fields__ if name not in RUN_SETTINGS}
        values["timeout"] = bounds.TIMEOUT.clamp_int(values["timeout"])
        return cls(**values, detach=detach, run_directory=run_directory)


RUN_SETTINGS = ("detach", "run_directory")


@dataclass(frozen=True)
class RemoteRun:
    """A detached SSH run as the coordinator knows it: its id on the machine, how many bytes
    of its output are recorded, and what is known of it from an earlier worker."""

    run_id: str
    offset: int = 0  # bytes of the run's output file recorded so far
    started: bool = False  # the start is recorded (the target is running)
    adopted: bool = False  # a worker that stopped claimed it first: it may have started it
    exit_code: int | None = None  # recorded already: only the clean-up is left


@dataclass(frozen=True)
class DeploymentContext:
    """What the init script is told about the deployment, and how to connect."""

    coordination_id: str
    ec2_instance_id: str = ""
    ec2_public_ip: str = ""
    deployment_version: str = ""
    connect_timeout: float = 10.0
    known_hosts_path: str = ""
    # Per delivery (set by the coordinator for each target):
    callback_url: str = field(default="", repr=False)  # holds a single-use credential
    deadline: float = 0.0  # time.time() by which an http_api/webhook run must have completed
    attempt: int = 1
    ca_bundle: str = ""
    # How long an agent may take to answer the trigger request itself. A longer synchronous
    # run times out, is retried with the same idempotency key, and ends through the callback.
    request_timeout: float = 30.0
    # SSH in detached mode: the run to start or re-attach to (None: attached mode).
    remote_run: RemoteRun | None = None
    # Run directories on a machine older than this many days are removed on its next run.
    run_retention_days: int = 30

    def script_environment(self, target: Target) -> dict[str, str]:
        return {
            "EC2_INSTANCE_ID": self.ec2_instance_id,
            "EC2_PUBLIC_IP": self.ec2_public_ip,
            "DEPLOYMENT_VERSION": self.deployment_version,
            "COORDINATION_ID": self.coordination_id,
            "ENVIRONMENT_ID": target.environment_id,
        }


class Reporter(Protocol):
    """How a connector tells the coordinator what happens while it runs."""

    stop: threading.Event  # set when the run must end (cancel, shutdown)
    # Set (before `stop`) when the worker shuts down: a detached run is let go, not stopped.
    hand_over: threading.Event

    def script_started(self, detail: str) -> None:
        """The script is running on the target: from here its outcome is unknown until it
        ends, and a connection failure is no longer safe to retry."""

    def output(self, text: str, *, end_offset: int | None = None) -> None:
        """Output received from the script, in order, as it arrives. A detached run says
        how far into its output file (bytes) this text ends, so a worker that re-attaches
        reads on from there."""

    def script_ended(self, exit_code: int | None) -> bool:
        """A detached run ended: record its exit code with its output, and block
        until that is committed (False when it was not: stopped, or no longer ours). Only
        then may its run directory, the proof it started, be removed."""

    def wait_for_callback(self, deadline: float) -> dict | None:
        """Block until the target's agent has called back (its `{"success", "exit_code",
        "output"}`), `stop` is set, or time.time() passes `deadline` (then None)."""


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    note: str = ""  # how the outcome is known, when not from the script itself


class ConnectorError(Exception):
    """A run that did not produce an exit code.

    `reason` is a short machine-readable word (connection_failed, host_key_unknown,
    host_key_changed, auth_failed, timeout, cancelled, ...). `permanent` says whether a
    retry could help: a refused connection may, a wrong key or a changed host key may not.
    `data` holds extra facts for the event record (never secrets).
    """

    def __init__(self, message: str, *, reason: str, permanent: bool, data: dict | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.permanent = permanent
        self.data = data or {}


class Connector(Protocol):
    def run(self, target: Target, context: DeploymentContext, reporter: Reporter) -> RunResult: ...

    def check(self, target: Target, context: DeploymentContext) -> str:
        """Preflight that runs nothing: can we reach and authenticate to the target?
        Returns a short detail; raises ConnectorError when not."""
        ...
