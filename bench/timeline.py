"""Where the time of one coordination went, read from its own rows. Run inside the
product's settings: `python -m bench.timeline COORDINATION_ID` prints JSON, times as
seconds since the epoch."""

import json
import sys


def timeline(coordination_id: str) -> dict:
    from deployments.models import Coordination, StageEvent, TargetStatus

    coordination = Coordination.objects.get(coordination_id=coordination_id)
    events = StageEvent.objects.filter(coordination=coordination)
    running = sorted(
        event.created_at.timestamp() for event in events.filter(new_status=TargetStatus.RUNNING).only("created_at")
    )
    triggering = sorted(
        event.created_at.timestamp() for event in events.filter(new_status=TargetStatus.TRIGGERING).only("created_at")
    )
    ended = sorted(
        target.finished_at.timestamp()
        for target in coordination.targets.filter(finished_at__isnull=False).only("finished_at")
    )
    statuses: dict[str, int] = {}
    for status in coordination.targets.values_list("status", flat=True):
        statuses[status] = statuses.get(status, 0) + 1

    def stamp(value):
        return value.timestamp() if value else None

    return {
        "status": coordination.status,
        "error": coordination.error[:300],
        "created": stamp(coordination.created_at),
        "claimed": stamp(coordination.started_at),
        "finished": stamp(coordination.finished_at),
        "first_triggering": triggering[0] if triggering else None,
        "last_triggering": triggering[-1] if triggering else None,
        "first_running": running[0] if running else None,
        "last_running": running[-1] if running else None,
        "last_target_ended": ended[-1] if ended else None,
        "claims": triggering,
        "ends": ended,
        "targets": statuses,
        "events": events.count(),
    }


def main() -> None:
    import django

    django.setup()
    print(json.dumps(timeline(sys.argv[1])))


if __name__ == "__main__":
    main()
