"""Bulk-create a deployment history for the API benchmark, fast (bulk_create, not the
coordinator). Run inside the product's settings:

    python -m bench.seed_history --count 9990 --start 10 [--active]

Coordination i has 4 targets spread over the registered environments and about 20
StageEvents (the coordination's 7 status changes, 3 per target, a note now and then), so
10,000 coordinations make about 200,000 events. `--active` also adds one coordination that
is still running, so the status overview shows the same active set at every size."""

import argparse
import json
from datetime import timedelta

TARGETS_PER_COORDINATION = 4
CHUNK = 500
COORDINATION_PATH = ["pending", "ec2_deploying", "ec2_completed", "local_triggering", "local_deploying"]


def seed(*, count: int, start: int, active: bool) -> dict:
    from django.db import transaction
    from django.utils import timezone

    from deployments.models import Coordination, StageEvent
    from environments.models import RemoteEnvironment

    # Histories span weeks: set created_at ourselves instead of "now" for every row.
    for model in (Coordination, StageEvent):
        model._meta.get_field("created_at").auto_now_add = False

    environments = list(RemoteEnvironment.objects.order_by("environment_id").only("pk", "environment_id"))
    if not environments:
        raise SystemExit("register environments first (import_environments)")
    now = timezone.now()
    made = {"coordinations": 0, "targets": 0, "events": 0}
    for chunk_start in range(start, start + count, CHUNK):
        indexes = range(chunk_start, min(chunk_start + CHUNK, start + count))
        with transaction.atomic():
            _seed_chunk(indexes, environments, now, made)
    if active:
        with transaction.atomic():
            _seed_chunk([start + count], environments, now, made, running=True)
    return made


def _coordination_status(index: int) -> str:
    if index % 50 == 7:
        return "cancelled"
    if index % 10 == 3:
        return "failed"
    return "completed"


def _coordinations(indexes, now, *, running: bool) -> list:
    from deployments.models import Coordination

    coordinations = []
    for index in indexes:
        created = now - timedelta(minutes=30 * (100_000 - index))
        status = "local_deploying" if running else _coordination_status(index)
        coordinations.append(
            Coordination(
                coordination_id=f"history_{index:06d}",
                status=status,
                triggered_by="api" if index % 2 else "command",
                version=f"v1.{index // 100}.{index % 100}",
                ec2_instance_id="i-0123456789abcdef0",
                ec2_public_ip="127.0.0.9",
                created_at=created,
                started_at=created + timedelta(seconds=1),
                finished_at=None if running else created + timedelta(seconds=9),
                error="1 of 4 environments failed: bench_0001 (exit_code)" if status == "failed" else "",
            )
        )
    return coordinations


def _targets(coordinations, indexes, environments, *, running: bool) -> list:
    from deployments.models import CoordinationTarget

    targets = []
    for coordination, index in zip(coordinations, indexes, strict=True):
        for k in range(TARGETS_PER_COORDINATION):
            environment = environments[(index * TARGETS_PER_COORDINATION + k) % len(environments)]
            failed = coordination.status == "failed" and k == 0
            status = "running" if running else ("failed" if failed else "succeeded")
            if coordination.status == "cancelled" and k == TARGETS_PER_COORDINATION - 1:
                status = "cancelled"
            targets.append(
                CoordinationTarget(
                    coordination=coordination,
                    remote_environment=environment,
                    environment_id=environment.environment_id,
                    status=status,
                    reason="exit_code" if failed else ("cancelled" if status == "cancelled" else ""),
                    exit_code=None if running or status == "cancelled" else (3 if failed else 0),
                    attempts=1,
                    started_at=coordination.started_at,
                    finished_at=None if running else coordination.finished_at,
                    output_tail="connecting to the platform...\nregistered with 127.0.0.9\ndone\n",
                    output_bytes=64,
                )
            )
    return targets


def _events(coordinations, targets, *, running: bool) -> list:
    from deployments.models import StageEvent

    events = []
    by_coordination: dict[int, list] = {}
    for target in targets:
        by_coordination.setdefault(target.coordination_id, []).append(target)
    for coordination in coordinations:
        at = coordination.created_at
        path = COORDINATION_PATH + ([] if running else ["local_completed", coordination.status])
        for old, new in zip(["", *path], path, strict=False):
            events.append(
                StageEvent(
                    coordination=coordination,
                    stage="coordination",
                    old_status=old,
                    new_status=new,
                    message=f"{old or 'created'} → {new}",
                    data={"targets": TARGETS_PER_COORDINATION},
                    created_at=at,
                )
            )
        for target in by_coordination[coordination.pk]:
            steps = [("pending", "triggering"), ("triggering", "running")]
            if not running:
                steps.append(("running", target.status))
            for old, new in steps:
                events.append(
                    StageEvent(
                        coordination=coordination,
                        target=target,
                        environment_id=target.environment_id,
                        stage="run",
                        old_status=old,
                        new_status=new,
                        message=f"{target.environment_id}: {new}",
                        data={"exit_code": target.exit_code},
                        created_at=at,
                    )
                )
    return events


def _seed_chunk(indexes, environments, now, made: dict, *, running: bool = False) -> None:
    from deployments.models import Coordination, CoordinationTarget, StageEvent

    coordinations = _coordinations(indexes, now, running=running)
    Coordination.objects.bulk_create(coordinations)
    targets = _targets(coordinations, indexes, environments, running=running)
    CoordinationTarget.objects.bulk_create(targets)
    events = _events(coordinations, targets, running=running)
    StageEvent.objects.bulk_create(events, batch_size=2000)
    made["coordinations"] += len(coordinations)
    made["targets"] += len(targets)
    made["events"] += len(events)


def main() -> None:
    import django

    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--active", action="store_true")
    options = parser.parse_args()
    django.setup()
    print(json.dumps(seed(count=options.count, start=options.start, active=options.active)))


if __name__ == "__main__":
    main()
