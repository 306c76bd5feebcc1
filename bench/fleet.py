"""The machines the benchmark deploys to: one loopback sshd standing in for N
environments, their config file, and the raw-SSH baseline (plain paramiko, no Django)."""

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from tests.support.sshd import SSHServer

SLEEP_SCRIPT = "init_sleep.sh"
MARK_SCRIPT = "init_mark.sh"
RAW_CONNECT_TIMEOUT = 60


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


def make_fleet(sshd: SSHServer, *, sleep_seconds: float) -> Fleet:
    sshd.script(SLEEP_SCRIPT, f"sleep {sleep_seconds:g}\n")
    fleet = Fleet(sshd=sshd, sleep_seconds=sleep_seconds)
    fleet.marks.mkdir(mode=0o777, exist_ok=True)
    fleet.marks.chmod(0o777)
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


def write_config(fleet: Fleet, path: Path, *, count: int) -> list[str]:
    """A remote_environments.json with `count` environments running the sleep script, plus
    one disabled environment running the mark script (the trigger-latency target). Returns
    the fan-out environment ids."""
    ids = [f"bench_{index:04d}" for index in range(count)]
    entries = [environment_entry(fleet, environment_id, fleet.sleep_script) for environment_id in ids]
    data = {
        "environments": entries,
        "default_settings": {"retry_count": 0, "retry_delay": 0, "health_check_retries": 0},
        "deployment_settings": {"enable_health_check": False},
    }
    path.write_text(json.dumps(data, indent=2))
    return ids


def write_mark_config(fleet: Fleet, path: Path) -> str:
    environment_id = "bench_latency"
    entry = environment_entry(fleet, environment_id, fleet.sshd.scripts / MARK_SCRIPT)
    path.write_text(json.dumps({"environments": [entry]}, indent=2))
    return environment_id


def raw_fanout(fleet: Fleet, count: int) -> float:
    """Wall time of the same N remote commands over plain paramiko, one thread per
    target, no Django: the limit the product is held to. Raises when any fails."""
    sshd = fleet.sshd
    key = paramiko.Ed25519Key.from_private_key_file(str(sshd.client_key))
    failures: list[str] = []
    command = f"cd {sshd.scripts} && exec {fleet.sleep_script}"

    def one(index: int) -> None:
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(sshd.known_hosts))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
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
            _stdin, stdout, _stderr = client.exec_command(command, timeout=RAW_CONNECT_TIMEOUT)
            stdout.read()
            status = stdout.channel.recv_exit_status()
            if status != 0:
                failures.append(f"target {index}: exit {status}")
        except Exception as exc:  # noqa: BLE001 (any failure spoils the baseline; report it)
            failures.append(f"target {index}: {type(exc).__name__}: {exc}")
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(index,), daemon=True) for index in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=RAW_CONNECT_TIMEOUT * 2)
    elapsed = time.monotonic() - started
    if failures or any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"raw baseline: {len(failures)} of {count} failed: {failures[:3]}")
    return elapsed
