import json
import os

from django.core.management.base import BaseCommand, CommandError

from environments.config import export_config


class Command(BaseCommand):
    help = "Write the registered environments in the remote_environments.json format."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", help="Output file (default: standard output).")
        parser.add_argument(
            "--include-secrets", action="store_true", help="Include passwords and API tokens in plain text."
        )

    def handle(self, *args, path, include_secrets, **options):
        text = json.dumps(export_config(include_secrets=include_secrets), indent=2, ensure_ascii=False) + "\n"
        if not path:
            self.stdout.write(text, ending="")
            return
        try:
            # A file that may hold secrets is created readable by its owner only.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if include_secrets else 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                if include_secrets:
                    # open()'s mode applies only to a new file; an existing one keeps its own.
                    os.fchmod(fd, 0o600)
                handle.write(text)
        except OSError as exc:
            raise CommandError(f"{path}: cannot write the file: {exc.strerror}", returncode=2) from None
        self.stderr.write(f"wrote {path}")
