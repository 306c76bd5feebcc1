from django.core.management.base import BaseCommand

from deployments.api.serializers import CoordinationDetailSerializer, CoordinationSummarySerializer
from deployments.management.commands._coordination import approval_hint, coordination_named, dumps
from deployments.models import CoordinationStatus as C
from deployments.selectors import PROGRESS_BUCKETS, coordinations_active, coordinations_listed
from environments.rollout import APPROVAL


class Command(BaseCommand):
    help = "Show the active coordinations, or one coordination in full."

    def add_arguments(self, parser):
        parser.add_argument("coordination_id", nargs="?", help="A coordination id (default: all active ones).")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print JSON.")

    def handle(self, *args, coordination_id, as_json: bool, **options):
        if coordination_id is not None:
            coordination = coordination_named(coordination_id)
            record = CoordinationDetailSerializer(coordination).data
            self.stdout.write(dumps(record) if as_json else _detail(record, approved_by=coordination.approver))
            return
        active = coordinations_listed(coordinations_active()).order_by("created_at", "id")
        records = CoordinationSummarySerializer(active, many=True).data
        if as_json:
            self.stdout.write(dumps(records))
        elif not records:
            self.stdout.write("no active coordinations")
        else:
            for record in records:
                self.stdout.write(_summary_line(record))


def _summary_line(record: dict) -> str:
    """One line of a coordination as the API's summary shows it (deployment_history too)."""
    progress = record["progress"]
    counts = f"{progress['done']}/{progress['total']} done: " + ", ".join(
        f"{progress[bucket]} {bucket}" for bucket in PROGRESS_BUCKETS if progress[bucket]
    )
    waves = record["rollout"]["waves"] or []
    at = f", wave {record['wave']} of {len(waves)}" if len(waves) > 1 else ""
    return f"{record['coordination_id']}  {record['status']:<17}  {record['version'] or '-':<12}  {counts}{at}"


def _rollout_line(record: dict) -> str:
    """The rollout it runs: its waves and where it is, the budget, the pauses or the
    approval, concurrency."""
    plan = record["rollout"]
    waves = plan["waves"] or []
    parts = []
    if len(waves) > 1:
        where = "no wave opened yet" if not record["wave"] else f"wave {record['wave']} of {len(waves)}"
        parts.append(f"{len(waves)} waves ({', '.join(map(str, waves))}), {where}")
    else:
        parts.append("one wave of every environment")
    budget = plan["failure_budget"]
    if budget is None:
        parts.append("no failure budget")
    else:
        given = f" ({plan['max_failures']})" if isinstance(plan["max_failures"], str) else ""
        parts.append(f"failure budget {budget}{given}: no environment starts once more fail")
    if len(waves) > 1:
        first, between = plan["pause_after_first_batch"], plan["batch_pause_seconds"]
        if first == APPROVAL:
            parts.append("after wave 1: an ADMIN's approval")
        elif first:
            parts.append(f"after wave 1: pause {first} s")
        if between:
            parts.append(f"between later waves: pause {between} s")
    parts.append(f"concurrency {plan['concurrency']}")
    return "  rollout: " + "; ".join(parts)


def _target_line(env: dict, *, waves: int) -> str:
    exit_code = "-" if env["exit_code"] is None else env["exit_code"]
    line = f"  {env['environment_id']:<24} {env['status']:<12} exit {exit_code!s:<4} attempts {env['attempts']}"
    if waves > 1:
        line += f"  wave {env['wave']}"
    if env["error"]:
        line += f"  {env['reason']}: {env['error']}"
    elif env["reason"]:
        line += f"  ({env['reason'].replace('_', ' ')})"
    elif env["waiting_for"]:
        line += f"  (waiting for {env['waiting_for']}, which holds this environment)"
    return line


def _detail(record: dict, *, approved_by: str = "") -> str:
    lines = [
        f"{record['coordination_id']}: {record['status']}",
        f"  version {record['version'] or '-'}, EC2 {record['ec2']['instance_id'] or '-'} "
        f"{record['ec2']['public_ip'] or '-'}, triggered by {record['triggered_by_user'] or record['triggered_by']}",
        f"  created {record['created_at']}, started {record['started_at'] or '-'}, "
        f"finished {record['finished_at'] or '-'}",
        _rollout_line(record),
    ]
    if record["status"] == C.AWAITING_APPROVAL:
        lines.append(f"  {approval_hint(record['coordination_id'])}")
    if record["approved_at"]:
        lines.append(f"  approved by {approved_by or 'an unknown user'} at {record['approved_at']}")
    if record["error"]:
        lines.append(f"  error: {record['error']}")
    waves = len(record["rollout"]["waves"] or [])
    lines.extend(_target_line(env, waves=waves) for env in record["environments"])
    return "\n".join(lines)
