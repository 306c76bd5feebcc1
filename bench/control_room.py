"""Figure 6, the control room at fleet size: what the admin dashboard, its live poll, the
API's environment list and `GET status` cost with N environments (default 3,000) and a
history of 10,000 coordinations. In-process, through Django's test client, on a SQLite
file with the product's settings (no web server: the request and the response as Django
makes them, the fastest way to measure at this size). Run with the product's settings:

    python -m bench.control_room --environments 3000 --coordinations 10000

Prints one JSON object with the figures."""

import argparse
import json
import statistics
import time

DASHBOARD_PATH = "/admin/"
LIVE_PATH = "/admin/deployments/coordination/dashboard/live/"
ENVIRONMENTS_PATH = "/api/deployment/environments"
STATUS_PATH = "/api/deployment/status"
WARMUP = 2
HOST = "127.0.0.1"

# The targets (issue 15), 1 KB = 1,000 bytes.
DASHBOARD_MS = 300
DASHBOARD_BYTES = 150_000
LIVE_UNCHANGED_BYTES = 5_000
STATUS_BYTES = 50_000
API_PAGE = 100

# The fleet's mix: a few unhealthy, some never checked, tags as teams and platforms use them.
PLATFORMS = ("mac", "linux", "windows")
TEAMS = ("team-a", "team-b", "team-c", "team-d", "team-e")


def _health(index: int) -> str:
    if index % 50 == 17:
        return "unhealthy"
    if index % 20 == 3:
        return "unknown"
    return "healthy"


def seed_environments(count: int) -> int:
    from django.utils import timezone

    from environments.models import RemoteEnvironment

    now = timezone.now()
    rows = []
    for index in range(count):
        health = _health(index)
        tags = [PLATFORMS[index % 3], TEAMS[index % 5]] + (["flaky"] if index % 97 == 0 else [])
        rows.append(
            RemoteEnvironment(
                environment_id=f"fleet_{index:05d}",
                environment_type=f"{PLATFORMS[index % 3]}_local",
                connection_method="ssh",
                host="127.0.0.1",
                port=22,
                username="deploy",
                ssh_key_path="/nonexistent/id_ed25519",
                enabled=index % 40 != 5,
                tags=tags,
                health_check_url=f"http://127.0.0.1:9/health/{index}",
                last_health=health,
                last_health_at=None if health == "unknown" else now,
                last_health_detail="" if health == "healthy" else "HTTP 503 from the health check",
                last_health_latency_ms=None if health == "unknown" else 12,
            )
        )
    RemoteEnvironment.objects.bulk_create(rows, batch_size=500)
    return count


def _timed(client, path: str, samples: int, **extra) -> tuple[list[float], bytes, int]:
    for _ in range(WARMUP):
        client.get(path, **extra)
    times = []
    response = None
    for _ in range(samples):
        started = time.perf_counter()
        response = client.get(path, **extra)
        times.append(time.perf_counter() - started)
    assert response is not None
    return times, response.content, response.status_code


def _figure(times: list[float], content: bytes, status: int) -> dict:
    ordered = sorted(times)
    return {
        "status": status,
        "bytes": len(content),
        "p50_ms": round(statistics.median(times) * 1000, 1),
        "p95_ms": round(ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1000, 1),
    }


def _listed(content: bytes) -> int:
    """How many environments an environment list answered: a bare list, or a page of one."""
    body = json.loads(content)
    if isinstance(body, dict):  # a page: its one list of environments ("results" or the like)
        body = next((value for value in body.values() if isinstance(value, list)), [])
    return len(body) if isinstance(body, list) else 0


def _change_one_health() -> None:
    """What a health check does when an environment goes down."""
    from environments.models import Health, RemoteEnvironment
    from environments.services import environment_record_health

    environment = RemoteEnvironment.objects.filter(last_health=Health.HEALTHY).order_by("pk").first()
    environment_record_health(environment_pk=environment.pk, healthy=False, detail="HTTP 503 (bench)", latency_ms=9)


def measure(*, samples: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_superuser("control-room", "bench@example.com", None)
    client = Client(SERVER_NAME=HOST)
    client.force_login(user)
    figures = {"dashboard": _figure(*_timed(client, DASHBOARD_PATH, samples))}

    first = client.get(LIVE_PATH)
    full = first.json()
    figures["live_first"] = {"status": first.status_code, "bytes": len(first.content)}
    version = full.get("version")
    unchanged = client.get(LIVE_PATH, {"version": version} if version else {})
    figures["live_unchanged"] = {"status": unchanged.status_code, "bytes": len(unchanged.content)}
    _change_one_health()
    changed = client.get(LIVE_PATH, {"version": version} if version else {})
    figures["live_changed"] = {"status": changed.status_code, "bytes": len(changed.content)}
    figures["live_versioned"] = bool(version)

    times, content, status = _timed(client, ENVIRONMENTS_PATH, samples)
    figures["api_environments"] = {**_figure(times, content, status), "listed": _listed(content)}
    figures["api_status"] = _figure(*_timed(client, STATUS_PATH, samples))
    return figures


def _kb(count: int) -> str:
    return f"{count / 1000:,.1f} KB"


def report_parts(figures: dict, *, environments: int, coordinations: int) -> tuple[list, list[str], str]:
    """The table's rows (each against its target), the missed targets, and the details."""
    from bench.report import Row

    at = f"6. {environments:,} environments, {coordinations:,} coordinations:"
    dashboard, api_list, status = figures["dashboard"], figures["api_environments"], figures["api_status"]
    unchanged, changed = figures["live_unchanged"], figures["live_changed"]
    checks = [
        (
            f"{at} dashboard page p95",
            f"{dashboard['p95_ms']:.0f} ms",
            f"≤ {DASHBOARD_MS} ms",
            dashboard["p95_ms"] <= DASHBOARD_MS,
        ),
        (
            f"{at} dashboard page size",
            _kb(dashboard["bytes"]),
            f"≤ {_kb(DASHBOARD_BYTES)}",
            dashboard["bytes"] <= DASHBOARD_BYTES,
        ),
        (
            f"{at} dashboard live poll, nothing changed",
            _kb(unchanged["bytes"]),
            f"≤ {_kb(LIVE_UNCHANGED_BYTES)}",
            unchanged["bytes"] <= LIVE_UNCHANGED_BYTES and figures["live_versioned"],
        ),
        (f"{at} dashboard live poll after one health change", _kb(changed["bytes"]), "", None),
        (
            f"{at} GET {ENVIRONMENTS_PATH} first page",
            f"{api_list['listed']:,} environments, {_kb(api_list['bytes'])}, p95 {api_list['p95_ms']:.0f} ms",
            f"≤ {API_PAGE} (paginated)",
            0 < api_list["listed"] <= API_PAGE,
        ),
        (
            f"{at} GET {STATUS_PATH} size",
            f"{_kb(status['bytes'])} (p95 {status['p95_ms']:.0f} ms)",
            f"< {_kb(STATUS_BYTES)}",
            status["bytes"] < STATUS_BYTES,
        ),
    ]
    rows = [Row(figure, value, target, met) for figure, value, target, met in checks]
    misses = [
        f"Control room: {figure[len(at) + 1 :]} {value}, target {target}."
        for figure, value, target, met in checks
        if met is False
    ]
    details = (
        f"### Control room, {environments:,} environments and {coordinations:,} coordinations, SQLite\n\n"
        "In-process through Django's test client (no web server) on a SQLite file with the product's settings, "
        f"signed in as a superuser; {figures['samples']} timed requests per page after {WARMUP} warm-up ones. Seeded "
        f"in {figures['seed_seconds']:.0f} s: {figures['seeded']}. Dashboard p50 {dashboard['p50_ms']:.0f} ms; its "
        f"first live poll (no version) {_kb(figures['live_first']['bytes'])}. Environment list p50 "
        f"{api_list['p50_ms']:.0f} ms, status p50 {status['p50_ms']:.0f} ms.\n"
    )
    return rows, misses, details


def add(bench) -> None:
    """Figure 6 into a `bench.run.Bench`: measured on a copy of its migrated SQLite file."""
    product = bench.sqlite("control-room")
    environments, coordinations = bench.options.fleet, bench.options.fleet_history
    arguments = ["--environments", str(environments), "--coordinations", str(coordinations)]
    result = product.python("bench.control_room", *arguments, timeout=1800)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    rows, misses, details = report_parts(figures, environments=environments, coordinations=coordinations)
    for row in rows:
        print(f"  {row.figure}: {row.value} (target {row.target or '-'}: {row.verdict or '-'})", flush=True)
    bench.rows += rows
    bench.misses += misses
    bench.details.append(details)


def main() -> None:
    import django

    parser = argparse.ArgumentParser()
    parser.add_argument("--environments", type=int, default=3000)
    parser.add_argument("--coordinations", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=20)
    options = parser.parse_args()
    django.setup()
    from bench.seed_history import seed

    started = time.monotonic()
    seeded = {"environments": seed_environments(options.environments)}
    seeded.update(seed(count=options.coordinations - 1, start=0, active=True))
    seconds = round(time.monotonic() - started, 1)
    figures = measure(samples=options.samples)
    print(json.dumps({"seeded": seeded, "seed_seconds": seconds, "samples": options.samples, **figures}))


if __name__ == "__main__":
    main()
