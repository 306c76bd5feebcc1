import json
import re

from django.core.management.base import BaseCommand, CommandError

from deployments.management.commands._coordination import EXIT_BAD_INPUT
from deployments.retention import DEFAULT_KEEP_LAST, MAX_KEEP_LAST, AgeError, history_prune, parse_age


class Command(BaseCommand):
    help = (
        "Delete finished coordinations older than --older-than, with their environments' records, events, "
        "output and callback tokens; never an unfinished one, nor each environment's last --keep-last."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than", required=True, metavar="AGE", help="Finished longer ago than this: 90d, 12h, 30m, 45s."
        )
        parser.add_argument(
            "--keep-last",
            default=str(DEFAULT_KEEP_LAST),
            metavar="N",
            help=f"Keep each environment's newest N finished coordinations (default {DEFAULT_KEEP_LAST}; 0: none).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would go; delete nothing.")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print one JSON object.")

    def handle(self, *args, older_than: str, keep_last: str, dry_run: bool, as_json: bool, **options):
        try:
            age = parse_age(older_than)
        except AgeError as exc:
            raise CommandError(f"--older-than: {exc}", returncode=EXIT_BAD_INPUT) from None
        report = history_prune(older_than=age, keep_last=_keep_last(keep_last), dry_run=dry_run)
        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
            return
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(
            f"🧹 {verb} coordinations finished before {report.cutoff.isoformat()} "
            f"(keeping each environment's last {report.keep_last}):"
        )
        for name, rows in report.deleted.items():
            self.stdout.write(f"  {name}: {rows}")


def _keep_last(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,6}", text.strip()) or int(text) > MAX_KEEP_LAST:
        raise CommandError(
            f"--keep-last: must be a whole number from 0 to {MAX_KEEP_LAST}, not {text[:40]!r}",
            returncode=EXIT_BAD_INPUT,
        )
    return int(text)
