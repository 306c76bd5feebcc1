from django.core.management.base import BaseCommand, CommandError

from environments.config import ConfigError, ConfigFileError, read_config_file
from environments.fields import SecretDecryptionError
from environments.services import environments_import


class Command(BaseCommand):
    help = "Register environments from a remote_environments.json file (all-or-nothing upsert)."

    def add_arguments(self, parser):
        parser.add_argument("path", help="Path of the config file.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Validate and show what would change; write nothing."
        )
        parser.add_argument("--prune", action="store_true", help="Delete environments the file does not list.")

    def handle(self, *args, path, dry_run, prune, **options):
        try:
            data = read_config_file(path)
        except ConfigFileError as exc:
            raise CommandError(str(exc), returncode=2) from None

        try:
            plan = environments_import(data=data, prune=prune, dry_run=dry_run)
        except SecretDecryptionError as exc:
            raise CommandError(f"{exc}; nothing was changed", returncode=2) from None
        except ConfigError as exc:
            for error in exc.errors:
                self.stderr.write(f"error: {error}")
            raise CommandError(f"{path}: {len(exc.errors)} error(s); nothing was changed", returncode=2) from None

        for mapped in plan.mapped:
            self.stdout.write(f"mapped {mapped}")
        for warning in plan.warnings:
            self.stderr.write(f"warning: {warning}")
        prefix = "would " if dry_run else ""
        for verb, environments in (("create", plan.create), ("update", plan.update), ("delete", plan.delete)):
            for environment in environments:
                self.stdout.write(f"{prefix}{verb} {environment.environment_id}")
        self.stdout.write(
            f"{'dry run: ' if dry_run else ''}{len(plan.create)} created, {len(plan.update)} updated, "
            f"{len(plan.unchanged)} unchanged, {len(plan.delete)} deleted"
        )
