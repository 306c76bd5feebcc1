import json

from django.core.management.base import BaseCommand, CommandError

from deployments.api.serializers import CoordinationDetailSerializer, CoordinationSummarySerializer
from deployments.selectors import PROGRESS_BUCKETS, coordination_detail, coordinations_active, coordinations_listed


class Command(BaseCommand):
    help = "Show the active coordinations, or one coordination in full."

    def add_arguments(self, parser):
        parser.add_argument("coordination_id", nargs="?", help="A coordination id (default: all active ones).")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print JSON.")

    def handle(self, *args, coordination_id, as_json: bool, **options):
        if coordination_id:
            coordination = coordination_detail(coordination_id)
            if coordination is None:
                raise CommandError(f"coordination_id: no coordination {coordination_id!r}", returncode=2)
            record = CoordinationDetailSerializer(coordination).data
            self.stdout.write(_dumps(record) if as_json else _detail(record))
            return
        active = coordinations_listed(coordinations_active()).order_by("created_at", "id")
        records = CoordinationSummarySerializer(active, many=True).data
        if as_json:
            self.stdout.write(_dumps(records))
        elif not records:
            self.stdout.write("no active coordinations")
        else:
            for record in records:
                self.stdout.write(_summary_line(record))


def _dumps(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _summary_line(record: dict) -> str:
    """One line of a coordination as the API's summary shows it (deployment_history too)."""
    progress = record["progress"]
    counts = f"{progress['done']}/{progress['total']} done: " + ", ".join(
        f"{progress[bucket]} {bucket}" for bucket in PROGRESS_BUCKETS if progress[bucket]
    )
    return f"{record['coordination_id']}  {record['status']:<16}  {record['version'] or '-':<12}  {counts}"


def _detail(record: dict) -> str:
    lines = [
        f"{record['coordination_id']}: {record['status']}",
        f"  version {record['version'] or '-'}, EC2 {record['ec2']['instance_id'] or '-'} "
        f"{record['ec2']['public_ip'] or '-'}, triggered by {record['triggered_by_user'] or record['triggered_by']}",
        f"  created {record['created_at']}, started {record['started_at'] or '-'}, "
        f"finished {record['finished_at'] or '-'}",
    ]
    if record["error"]:
        lines.append(f"  error: {record['error']}")
    for env in record["environments"]:
        exit_code = "-" if env["exit_code"] is None else env["exit_code"]
        line = f"  {env['environment_id']:<24} {env['status']:<12} exit {exit_code!s:<4} attempts {env['attempts']}"
        if env["error"]:
            line += f"  {env['reason']}: {env['error']}"
        elif env["reason"]:
            line += f"  ({env['reason'].replace('_', ' ')})"
        lines.append(line)
    return "\n".join(lines)
