"""Figures 2 and 3, through a real gunicorn on 127.0.0.1: how soon a `POST trigger-local`
has its script started on the target, and what `GET history` and `GET status` cost as the
history grows."""

import json
import random
import statistics
import time
from dataclasses import dataclass, field

import requests

from bench.fleet import Fleet, write_mark_config
from bench.stack import BenchError, Product

TRIGGER_PATH = "/api/deployment/trigger-local"
HISTORY_PATH = "/api/deployment/history"
STATUS_PATH = "/api/deployment/status"
REQUEST_TIMEOUT = 30
MARK_TIMEOUT = 30
FINISH_TIMEOUT = 60
# Requests before the timed ones: every gunicorn worker thread has loaded what it needs.
WARMUP = 20


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile, in seconds."""
        ordered = sorted(self.values)
        rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]

    @property
    def p50(self) -> float:
        return statistics.median(self.values)

    @property
    def p95(self) -> float:
        return self.percentile(95)


def api_user(product: Product) -> str:
    """A superuser (ADMIN, no usable password) and a token for it; returns the token."""
    product.manage("createsuperuser", "--noinput", "--username", "bench", "--email", "bench@example.com")
    result = product.manage("create_api_token", "bench", "--expires-in", "1")
    return result.stdout.strip().splitlines()[-1]


class Client:
    def __init__(self, base_url: str, token: str):
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def get(self, path: str, **params) -> requests.Response:
        return self.session.get(self.base_url + path, params=params, timeout=REQUEST_TIMEOUT)

    def post(self, path: str, body: dict) -> requests.Response:
        return self.session.post(self.base_url + path, json=body, timeout=REQUEST_TIMEOUT)


# --- Figure 2: trigger latency -------------------------------------------------------------


def trigger_latency(product: Product, fleet: Fleet, client: Client, *, samples: int, log) -> Samples:
    """POST trigger-local for one environment whose script writes the time it started;
    the latency is from just before the POST to that time. Each run ends before the next
    starts, after a random pause (so the worker's polling phase is sampled fairly)."""
    config = product.work / "latency_environment.json"
    environment_id = write_mark_config(fleet, config)
    product.manage("import_environments", str(config))
    rng = random.Random(7)
    latencies = Samples()
    for index in range(samples):
        time.sleep(rng.uniform(0.2, 0.5))
        coordination_id = f"bench_latency_{index:03d}"
        mark = fleet.marks / coordination_id
        started = time.time()
        response = client.post(TRIGGER_PATH, {"environments": [environment_id], "coordination_id": coordination_id})
        if response.status_code != 202:
            raise BenchError(f"POST {TRIGGER_PATH}: {response.status_code} {response.text[:500]}")
        opened = _wait_for_mark(mark)
        latencies.values.append(opened - started)
        _wait_until_finished(client, coordination_id)
    log(f"  trigger latency: p50 {latencies.p50 * 1000:.0f} ms, p95 {latencies.p95 * 1000:.0f} ms")
    return latencies


def _wait_for_mark(mark) -> float:
    deadline = time.monotonic() + MARK_TIMEOUT
    while time.monotonic() < deadline:
        try:
            text = mark.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text:
            return float(text)
        time.sleep(0.002)
    raise BenchError(f"the script never started within {MARK_TIMEOUT} s ({mark.name})")


def _wait_until_finished(client: Client, coordination_id: str) -> None:
    deadline = time.monotonic() + FINISH_TIMEOUT
    while time.monotonic() < deadline:
        body = client.get(STATUS_PATH, coordination_id=coordination_id).json()
        if body.get("status") in ("completed", "failed", "cancelled"):
            if body["status"] != "completed":
                raise BenchError(f"{coordination_id} ended {body['status']}: {body.get('error')}")
            return
        time.sleep(0.05)
    raise BenchError(f"{coordination_id} did not finish within {FINISH_TIMEOUT} s")


# --- Figure 3: API cost as history grows -----------------------------------------------------


@dataclass
class EndpointCost:
    path: str
    small: Samples = field(default_factory=Samples)
    large: Samples = field(default_factory=Samples)

    @property
    def ratio(self) -> float:
        return self.large.p95 / self.small.p95


def _time_request(client: Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    _checked(response, path)
    return elapsed


def _checked(response: requests.Response, path: str) -> None:
    if response.status_code != 200:
        raise BenchError(f"GET {path}: {response.status_code} {response.text[:500]}")
    json.loads(response.content)


def seed_history(product: Product, *, coordinations: int) -> dict:
    """`coordinations` in all, one of them still running (bench.seed_history)."""
    result = product.python("bench.seed_history", "--count", str(coordinations - 1), "--active", timeout=900)
    return json.loads(result.stdout)


def history_cost(small: Client, large: Client, *, samples: int, log) -> list[EndpointCost]:
    """GET history and GET status against two installations that differ only in how much
    history they hold, each behind its own gunicorn. Requests alternate between the two
    (in random order within each pair), so anything else loading the machine meanwhile
    weighs on both alike."""
    costs = [EndpointCost(HISTORY_PATH), EndpointCost(STATUS_PATH)]
    clients = {"small": small, "large": large}
    rng = random.Random(11)
    for cost in costs:
        timings = {"small": cost.small, "large": cost.large}
        for _ in range(WARMUP):
            for client in clients.values():
                _time_request(client, cost.path)
        for _ in range(samples):
            order = ["small", "large"]
            rng.shuffle(order)
            for size in order:
                timings[size].values.append(_time_request(clients[size], cost.path))
        log(
            f"  GET {cost.path}: p95 {cost.small.p95 * 1000:.1f} ms (small) → {cost.large.p95 * 1000:.1f} ms "
            f"(large), ratio {cost.ratio:.2f}"
        )
    return costs
