import json

from django.core.management.base import BaseCommand, CommandError

from deployments.models import Coordination
from deployments.selectors import coordination_as_json, coordinations_active


class Command(BaseCommand):
    help = "Show the active coordinations, or one coordination in full."

    def add_arguments(self, parser):
        parser.add_argument("coordination_id", nargs="?", help="A coordination id (default: all active ones).")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print JSON.")

    def handle(self, *args, coordination_id, as_json: bool, **options):
        if coordination_id:
            coordination = (
                Coordination.objects.select_related("triggered_by_user").filter(coordination_id=coordination_id).first()
            )
            if coordination is None:
                raise CommandError(f"coordination_id: no coordination {coordination_id!r}", returncode=2)
            record = coordination_as_json(coordination)
            self.stdout.write(_dumps(record) if as_json else _detail(record))
            return
        records = [coordination_as_json(c) for c in coordinations_active().order_by("created_at")]
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
    counts = ", ".join(f"{count} {status}" for status, count in sorted(record["counts"].items()))
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
