from django.core.management.base import BaseCommand, CommandError

from deployments.management.commands._coordination import (
    EXIT_CONFLICT,
    coordination_json,
    coordination_named,
    machine_actor,
)
from deployments.services import CoordinationConflict, coordination_approve


class Command(BaseCommand):
    help = (
        "Approve the rest of a rollout that awaits approval after its first wave (the canary): the next wave "
        "starts. The approval names the machine account running this command. "
        "Exit codes: 0 approved, 1 not awaiting approval (already approved, cancelled, ended, or not there yet), "
        "2 no such coordination."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("coordination_id", help="The coordination awaiting approval.")
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the coordination as JSON.")

    def handle(self, *args, coordination_id: str, as_json: bool, **options):
        coordination = coordination_named(coordination_id)
        try:
            coordination_approve(coordination=coordination, actor=machine_actor())
        except CoordinationConflict as exc:
            raise CommandError(exc.message, returncode=EXIT_CONFLICT) from None
        if as_json:
            self.stdout.write(coordination_json(coordination.coordination_id))
            return
        waves = (coordination.rollout or {}).get("waves") or []
        name = coordination.coordination_id
        self.stdout.write(
            f"👍 approved {name}: wave {coordination.wave + 1} of {len(waves)} starts "
            f"(follow it with: deployment_status {name})"
        )
