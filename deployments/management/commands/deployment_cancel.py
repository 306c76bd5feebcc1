from django.core.management.base import BaseCommand, CommandError

from deployments.management.commands._coordination import (
    EXIT_CONFLICT,
    coordination_json,
    coordination_named,
    machine_actor,
)
from deployments.models import TARGET_ACTIVE
from deployments.services import CoordinationConflict, coordination_cancel


class Command(BaseCommand):
    help = (
        "Cancel a coordination that has not ended (running, paused between waves, or awaiting approval): "
        "environments not started yet end cancelled, running scripts are hung up. The cancel names the machine "
        "account running this command. Exit codes: 0 cancelled, 1 it had already ended, 2 no such coordination."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("coordination_id", help="The coordination to cancel.")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the coordination as JSON.")

    def handle(self, *args, coordination_id: str, as_json: bool, **options):
        coordination = coordination_named(coordination_id)
        try:
            coordination_cancel(coordination=coordination, actor=machine_actor())
        except CoordinationConflict as exc:
            raise CommandError(exc.message, returncode=EXIT_CONFLICT) from None
        if as_json:
            self.stdout.write(coordination_json(coordination.coordination_id))
            return
        running = coordination.targets.filter(status__in=TARGET_ACTIVE).count()
        line = f"🛑 cancelled {coordination.coordination_id}"
        if running:
            line += f": the worker hangs up the {running} running environment{'s' if running != 1 else ''}"
        self.stdout.write(line)
