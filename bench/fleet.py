"""The machines the benchmark deploys to: one loopback sshd standing in for N
environments, their config file, and the raw-SSH baseline (plain paramiko, no Django).

The fan-out's script notes the time it starts and the time it ends (`date +%s.%N`, one line
each, appended to a file per run): the fixed cost around the SSH part is measured from the
machines' own clock, not from what the product records."""

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paramiko

from tests.support.sshd import SSHServer

SLEEP_SCRIPT = "init_sleep.sh"
MARK_SCRIPT = "init_mark.sh"
RAW_CONNECT_TIMEOUT = 60
# The tag of the environments the "N at once" fan-out deploys to (the first `at_once`).
AT_ONCE_TAG = "bench_at_once"


@dataclass(frozen=True)
class Fleet:
    """N environments on one sshd, and the scripts they run."""

    sshd: SSHServer
    sleep_seconds: float

    @property
    def sleep_script(self) -> Path:
        return self.sshd.scripts / SLEEP_SCRIPT

    @property
    def marks(self) -> Path:
        """Where the mark script writes the time it started, one file per coordination."""
        return self.sshd.scripts / "marks"

    @property
    def stamps(self) -> Path:
        """Where the sleep script appends `s TIME ENVIRONMENT_ID` when it starts and
        `e TIME ENVIRONMENT_ID` when it ends, one file per run ($COORDINATION_ID; the raw
        baseline sets its own)."""
        return self.sshd.scripts / "stamps"


@dataclass(frozen=True)
class ScriptTimes:
    """When a run's scripts started and ended, as they wrote it (seconds since the epoch)."""

    starts: int
    ends: int
    first_start: float
    last_end: float


def script_times(fleet: Fleet, run: str) -> ScriptTimes:
    lines = (fleet.stamps / run).read_text().split("\n")
    starts = [float(line.split()[1]) for line in lines if line.startswith("s ")]
    ends = [float(line.split()[1]) for line in lines if line.startswith("e ")]
    if not starts or not ends:
        raise RuntimeError(f"run {run}: no script wrote its times ({len(starts)} starts, {len(ends)} ends)")
    return ScriptTimes(len(starts), len(ends), min(starts), max(ends))


def make_fleet(sshd: SSHServer, *, sleep_seconds: float) -> Fleet:
    fleet = Fleet(sshd=sshd, sleep_seconds=sleep_seconds)
    stamp = f'"{fleet.stamps}/$COORDINATION_ID"'
    sshd.script(
        SLEEP_SCRIPT,
        f'echo "s $(date +%s.%N) $ENVIRONMENT_ID" >> {stamp}\nsleep {sleep_seconds:g}\n'
        f'echo "e $(date +%s.%N) $ENVIRONMENT_ID" >> {stamp}\n',
    )
    for folder in (fleet.marks, fleet.stamps):
        folder.mkdir(mode=0o777, exist_ok=True)
        folder.chmod(0o777)
    # The first thing the script does is note the time: "the first SSH session is open".
    sshd.script(MARK_SCRIPT, f'date +%s.%N > "{fleet.marks}/$COORDINATION_ID"\n')
    return fleet


def environment_entry(fleet: Fleet, environment_id: str, script: Path) -> dict:
    sshd = fleet.sshd
    return {
        "environment_id": environment_id,
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": sshd.host,
        "port": sshd.port,
        "username": sshd.user,
        "ssh_key_path": str(sshd.client_key),
        "init_script_path": str(script),
        "working_directory": str(sshd.scripts),
        "timeout": 60,
        "description": "benchmark target on the loopback sshd",
    }


def write_config(
    fleet: Fleet, path: Path, *, count: int, at_once: int = 0, parallel_limit: int | None = None
) -> list[str]:
    """A remote_environments.json with `count` environments running the sleep script, the
    first `at_once` of them tagged AT_ONCE_TAG; `parallel_limit` is the product's window.
    Returns the environment ids."""
    ids = [f"bench_{index:04d}" for index in range(count)]
    entries = [environment_entry(fleet, environment_id, fleet.sleep_script) for environment_id in ids]
    for entry in entries[:at_once]:
        entry["tags"] = [AT_ONCE_TAG]
    deployment = {"enable_health_check": False}
    if parallel_limit is not None:
        deployment["parallel_limit"] = parallel_limit
    data = {
        "environments": entries,
        "default_settings": {"retry_count": 0, "retry_delay": 0, "health_check_retries": 0},
        "deployment_settings": deployment,
    }
    path.write_text(json.dumps(data, indent=2))
    return ids


def write_mark_config(fleet: Fleet, path: Path) -> str:
    environment_id = "bench_latency"
    entry = environment_entry(fleet, environment_id, fleet.sshd.scripts / MARK_SCRIPT)
    path.write_text(json.dumps({"environments": [entry]}, indent=2))
    return environment_id


@dataclass(frozen=True)
class RawRun:
    started: float  # seconds since the epoch
    first_connect: float  # the first thread calling connect(): its handshake begins
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def raw_fanout(fleet: Fleet, count: int, *, run: str, window: int | None = None) -> RawRun:
    """The same N remote commands over plain paramiko, no Django: the limit the product is
    held to. One thread per target, at most `window` at once (a new one as one ends; all at
    once without it). TCP_NODELAY on each socket once connected, as the product's connector
    does. The scripts write their times under `run`. Raises when any fails."""
    sshd = fleet.sshd
    key = paramiko.Ed25519Key.from_private_key_file(str(sshd.client_key))
    failures: list[str] = []
    connects: list[float] = []
    command = f"cd {sshd.scripts} && COORDINATION_ID={run} exec {fleet.sleep_script}"

    def one(index: int) -> None:
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(sshd.known_hosts))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            connects.append(time.time())
            client.connect(
                sshd.host,
                port=sshd.port,
                username=sshd.user,
                pkey=key,
                timeout=RAW_CONNECT_TIMEOUT,
                banner_timeout=RAW_CONNECT_TIMEOUT,
                auth_timeout=RAW_CONNECT_TIMEOUT,
                allow_agent=False,
                look_for_keys=False,
            )
            client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _stdin, stdout, _stderr = client.exec_command(command, timeout=RAW_CONNECT_TIMEOUT)
            stdout.read()
            status = stdout.channel.recv_exit_status()
            if status != 0:
                failures.append(f"target {index}: exit {status}")
        except Exception as exc:  # noqa: BLE001 (any failure spoils the baseline; report it)
            failures.append(f"target {index}: {type(exc).__name__}: {exc}")
        finally:
            client.close()

    started = time.time()
    with ThreadPoolExecutor(max_workers=min(window or count, count), thread_name_prefix="raw") as pool:
        futures = [pool.submit(one, index) for index in range(count)]
        for future in futures:
            future.result(timeout=RAW_CONNECT_TIMEOUT * 2 + count)
    ended = time.time()
    if failures:
        raise RuntimeError(f"raw baseline: {len(failures)} of {count} failed: {failures[:3]}")
    return RawRun(started, min(connects), ended)
