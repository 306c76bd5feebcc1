"""Figure 5: a fleet of polling agents against one web process as `make run` starts it.

N simulated agents (default 1,000; coroutines on one event loop in this process, each
speaking the agent protocol of /api/agent/ over a new loopback connection per request, as
the real agent's urllib does) poll every `poll_interval` seconds, jittered 0.8..1.2 x as the agent does.
Measured:
- the web process tree's CPU while the fleet only polls (cores busy, from /proc), and
  each poll's latency (p95);
- one deployment to the whole fleet through a real qcluster: from the trigger request to
  each simulated agent holding its run (the moment the real agent starts the script), p95.
The simulated agents share the machine's cores with the web process; their own CPU is
reported too.
"""

import asyncio
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import api, report
from bench.stack import BenchError, Product, process_tree

POLL_INTERVAL = 5
START_TARGET_INTERVALS = 2  # trigger → script start p95 below 2 x poll_interval
WARMUP_SECONDS = 12
IDLE_SECONDS = 30
DEPLOY_TIMEOUT = 300
REQUEST_TIMEOUT = 30
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def write_polling_config(path: Path, *, count: int, tag: str = "bench-poll") -> list[tuple[str, str]]:
    """A config file of `count` polling environments; returns (environment_id, token) pairs."""
    agents = [(f"poll-{index:05d}", f"pa_agent_bench_{index:05d}_{'x' * 24}") for index in range(count)]
    entries = [
        {
            "environment_id": environment_id,
            "environment_type": "linux_local",
            "connection_method": "polling",
            "agent_token": token,
            "poll_interval": POLL_INTERVAL,
            "timeout": 600,
            "tags": [tag],
        }
        for environment_id, token in agents
    ]
    settings = {"parallel_limit": max(64, count), "enable_health_check": False}
    path.write_text(json.dumps({"environments": entries, "deployment_settings": settings}))
    return agents


def cpu_seconds(root: int) -> float:
    """utime + stime of a process tree, now."""
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / CLOCK_TICKS


@dataclass
class FleetRecord:
    polls: list[tuple[float, float]] = field(default_factory=list)  # (when, seconds)
    claimed: dict[str, float] = field(default_factory=dict)  # coordination_id:environment → time.time()
    errors: list[str] = field(default_factory=list)


async def _post(host: str, port: int, path: str, token: str, body: dict) -> tuple[int, dict]:
    """One request on a new connection (as the real agent's urllib makes it), HTTP/1.1 by hand:
    thousands of agents in one process cost the machine little, so the web process gets the cores."""
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), REQUEST_TIMEOUT)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        raw = await asyncio.wait_for(reader.read(), REQUEST_TIMEOUT)
    finally:
        writer.close()
    head, _, answer = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(answer or b"{}")


class SimulatedAgent:
    """One agent: poll, take a run, report it, poll again."""

    def __init__(self, host: str, port: int, environment_id: str, token: str, record: FleetRecord):
        self.host, self.port = host, port
        self.environment_id, self.token = environment_id, token
        self.record = record

    async def request(self, path: str, body: dict) -> tuple[int, dict]:
        return await _post(self.host, self.port, path, self.token, body)

    async def run(self, stop: asyncio.Event) -> None:
        interval = POLL_INTERVAL
        await asyncio.sleep(random.uniform(0, interval))  # noqa: S311 (spread, not security)
        while not stop.is_set():
            started = time.monotonic()
            try:
                status, answer = await self.request("/api/agent/poll", {"environment_id": self.environment_id})
            except (TimeoutError, OSError, ValueError, IndexError) as exc:
                self.record.errors.append(f"poll: {type(exc).__name__}")
                await asyncio.sleep(interval)
                continue
            self.record.polls.append((time.time(), time.monotonic() - started))
            if status != 200:
                self.record.errors.append(f"poll: HTTP {status}")
            elif answer.get("run"):
                await self.take(answer["run"])
            interval = answer.get("poll_interval", interval) if status == 200 else interval
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))  # noqa: S311

    async def take(self, run: dict) -> None:
        """The moment the real agent starts the script; then its output with the exit code (a
        short script's output and result go in one request)."""
        self.record.claimed[f"{run['coordination_id']}:{self.environment_id}"] = time.time()
        text = f"init on {self.environment_id}\n"
        try:
            await self.request(f"/api/agent/runs/{run['run_id']}/result", {"exit_code": 0, "offset": 0, "text": text})
        except (TimeoutError, OSError, ValueError, IndexError) as exc:
            self.record.errors.append(f"report: {type(exc).__name__}")


class SimulatedFleet:
    """The agents, on an event loop in a thread of their own."""

    def __init__(self, agents: list[SimulatedAgent]):
        self.agents = agents
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fleet", daemon=True)
        self.stop_event: asyncio.Event | None = None
        self.tasks: list[asyncio.Task] = []

    async def _start(self) -> None:
        self.stop_event = asyncio.Event()
        self.tasks = [self.loop.create_task(agent.run(self.stop_event)) for agent in self.agents]

    async def _stop(self) -> None:
        assert self.stop_event is not None
        self.stop_event.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def __enter__(self) -> "SimulatedFleet":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=REQUEST_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=REQUEST_TIMEOUT)


@dataclass
class PollingFigures:
    agents: int
    web_cores: float
    fleet_cores: float
    poll_p50: float
    poll_p95: float
    polls_per_second: float
    start_p50: float
    start_p95: float
    deploy_seconds: float
    errors: list[str]


def _wait_for_coordination(client: api.Client, coordination_id: str) -> dict:
    deadline = time.monotonic() + DEPLOY_TIMEOUT
    while time.monotonic() < deadline:
        answer = client.get(f"/api/deployment/coordinations/{coordination_id}/")
        if answer.status_code == 200 and answer.json()["status"] in ("completed", "failed", "cancelled"):
            return answer.json()
        time.sleep(1)
    raise BenchError(f"coordination {coordination_id} did not end within {DEPLOY_TIMEOUT} s")


def measure(product: Product, *, count: int, log) -> PollingFigures:
    config = product.work / "polling.json"
    agents = write_polling_config(config, count=count)
    product.manage("import_environments", str(config), timeout=600)
    client = api.Client(product.start_web(), api.api_user(product))
    web = product.processes[-1].process
    product.start_qcluster()
    host, port = client.base_url.removeprefix("http://").split(":")
    record = FleetRecord()
    fleet = SimulatedFleet([SimulatedAgent(host, int(port), env_id, token, record) for env_id, token in agents])
    with fleet:
        log(f"  {count} agents polling; warming up {WARMUP_SECONDS} s ...")
        time.sleep(WARMUP_SECONDS)
        web_before, fleet_before, idle_started = cpu_seconds(web.pid), cpu_seconds(os.getpid()), time.time()
        time.sleep(IDLE_SECONDS)
        idle_ended = time.time()
        web_cpu, fleet_cpu = cpu_seconds(web.pid) - web_before, cpu_seconds(os.getpid()) - fleet_before
        log("  triggering one deployment to the whole fleet ...")
        triggered = time.time()
        answer = client.post(api.TRIGGER_PATH, {"tags": ["bench-poll"], "coordination_id": "bench-poll-1"})
        if answer.status_code not in (200, 201, 202):
            raise BenchError(f"trigger-local answered {answer.status_code}: {answer.text[:300]}")
        ended = _wait_for_coordination(client, "bench-poll-1")
        deploy_seconds = time.time() - triggered
        if ended["status"] != "completed":
            raise BenchError(f"the deployment ended {ended['status']}: {str(ended.get('error'))[:300]}")
    window = idle_ended - idle_started
    idle_polls = api.Samples([seconds for when, seconds in record.polls if idle_started <= when <= idle_ended])
    starts = api.Samples([when - triggered for key, when in record.claimed.items() if key.startswith("bench-poll-1:")])
    if len(starts.values) != count:
        raise BenchError(f"{len(starts.values)} of {count} agents took the run")
    return PollingFigures(
        agents=count,
        web_cores=web_cpu / window,
        fleet_cores=fleet_cpu / window,
        poll_p50=idle_polls.p50,
        poll_p95=idle_polls.p95,
        polls_per_second=len(idle_polls.values) / window,
        start_p50=starts.p50,
        start_p95=starts.p95,
        deploy_seconds=deploy_seconds,
        errors=sorted(set(record.errors))[:10],
    )


def report_parts(figures: PollingFigures) -> tuple[list[report.Row], list[str], str]:
    """The table's rows, the missed targets, and the details section."""
    target = START_TARGET_INTERVALS * POLL_INTERVAL
    n = f"{figures.agents:,}"
    rows = [
        report.Row(f"5. {n} polling agents: web process CPU while they poll (cores)", f"{figures.web_cores:.2f}"),
        report.Row(f"5. {n} polling agents: poll p95", f"{figures.poll_p95 * 1000:.0f} ms"),
        report.Row(
            f"5. {n} polling agents: trigger → script start p95",
            f"{figures.start_p95:.1f} s",
            f"< {target} s (2 × poll_interval)",
            figures.start_p95 < target,
        ),
    ]
    misses = []
    if figures.start_p95 >= target:
        misses.append(
            f"Polling: trigger → script start p95 {figures.start_p95:.1f} s, not below {target} s "
            f"(p50 {figures.start_p50:.1f} s); see the details."
        )
    details = (
        f"### {n} polling agents, SQLite\n\n"
        f"Simulated agents in the benchmark's process (coroutines, a new connection per request), polling every "
        f"{POLL_INTERVAL} s jittered 0.8..1.2x; one gunicorn as `make run` starts it (2 workers x 4 threads) and "
        f"one qcluster. Idle window {IDLE_SECONDS} s: {figures.polls_per_second:.0f} polls/s, poll p50 "
        f"{figures.poll_p50 * 1000:.0f} ms, web CPU {figures.web_cores:.2f} cores, the simulated fleet itself "
        f"{figures.fleet_cores:.2f} cores (on the same 2 cores). One deployment to all {n}: "
        f"{figures.deploy_seconds:.1f} s from the trigger to completed; trigger → run taken p50 "
        f"{figures.start_p50:.1f} s. Errors seen by the agents: {figures.errors or 'none'}.\n"
    )
    return rows, misses, details
