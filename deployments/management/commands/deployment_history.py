import argparse
import json

from django.core.management.base import BaseCommand

from deployments.api.serializers import CoordinationSummarySerializer
from deployments.management.commands.deployment_status import _summary_line
from deployments.selectors import coordinations_finished, coordinations_listed

MAX_LIMIT = 10_000


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_LIMIT}")
    return value


class Command(BaseCommand):
    help = "List finished coordinations, newest first."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=_positive_int, default=10, help="How many (default 10).")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print JSON.")

    def handle(self, *args, limit: int, as_json: bool, **options):
        records = CoordinationSummarySerializer(coordinations_listed(coordinations_finished())[:limit], many=True).data
        if as_json:
            self.stdout.write(json.dumps(records, indent=2, ensure_ascii=False))
            return
        if not records:
            self.stdout.write("no finished coordinations")
        for record in records:
            self.stdout.write(_summary_line(record))
