import json

from django.core.management.base import BaseCommand, CommandError

from environments.models import RemoteEnvironment
from environments.services import environments_check


class Command(BaseCommand):
    help = (
        "Health-check environments now (GET health_check_url), or with --connectivity run a preflight that "
        "runs nothing: SSH connects, verifies the host key and authenticates; http_api and webhook check that "
        "the endpoint answers. Exit 1 when any check fails."
    )

    def add_arguments(self, parser):
        parser.add_argument("--environments", help="Comma-separated environment ids (default: every enabled one).")
        parser.add_argument("--connectivity", action="store_true", help="Preflight the connections instead.")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print JSON.")

    def handle(self, *args, environments, connectivity: bool, as_json: bool, **options):
        if environments is None:
            selected = list(RemoteEnvironment.objects.filter(enabled=True))
        else:
            wanted = [item.strip() for item in environments.split(",") if item.strip()]
            found = {env.environment_id: env for env in RemoteEnvironment.objects.filter(environment_id__in=wanted)}
            unknown = [env_id for env_id in wanted if env_id not in found]
            if unknown or not wanted:
                problem = f"unknown environment(s): {', '.join(unknown)}" if unknown else "name at least one"
                raise CommandError(f"--environments: {problem}", returncode=2)
            selected = [found[env_id] for env_id in wanted]
        if not selected:
            raise CommandError("--environments: there is no enabled environment to check", returncode=2)

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
