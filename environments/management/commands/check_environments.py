import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from environments.selectors import environments_for_deployment
from environments.services import environments_check


class Command(BaseCommand):
    help = (
        "Health-check environments now (GET health_check_url), or with --connectivity run a preflight that "
        "runs nothing: SSH connects, verifies the host key and authenticates; http_api and webhook check that "
        "the endpoint answers; a polling agent passes when it asked for work within 3 × its poll_interval ('agent "
        "last seen N s ago'). Exit 1 when any check fails."
    )

    def add_arguments(self, parser):
        parser.add_argument("--environments", help="Comma-separated environment ids (default: every enabled one).")
        parser.add_argument("--connectivity", action="store_true", help="Preflight the connections instead.")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print JSON.")

    def handle(self, *args, environments, connectivity: bool, as_json: bool, **options):
        wanted = None if environments is None else [item.strip() for item in environments.split(",") if item.strip()]
        try:
            selected = environments_for_deployment(environment_ids=wanted)
        except ValidationError as exc:
            raise CommandError(f"--environments: {'; '.join(exc.message_dict['environments'])}", returncode=2) from None

        reports = environments_check(environments=selected, connectivity=connectivity)
        if as_json:
            self.stdout.write(json.dumps([report.as_json() for report in reports], indent=2))
        else:
            for report in reports:
                icon = {True: "✅", False: "❌", None: "➖"}[report.ok]
                latency = f" ({report.latency_ms} ms)" if report.latency_ms is not None else ""
                self.stdout.write(f"{icon} {report.environment_id}: {report.detail}{latency}")
        if any(report.ok is False for report in reports):
            raise SystemExit(1)
