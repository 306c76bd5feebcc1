import argparse
import os
import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from deployments.management.commands._coordination import approval_hint, coordination_json
from deployments.management.commands._output import OutputFollower
from deployments.models import CoordinationStatus, StageEvent, TriggerSource
from deployments.selectors import coordination_finished
from deployments.services import EnvironmentsBusy, coordination_start
from deployments.stage_log import format_event, format_total
from environments import bounds, rollout
from environments.tags import split_tags
from powerautomation import json_input

EXIT_COMPLETED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STILL_RUNNING = 0, 1, 2, 3
# --wait notices the end half of this after it on average: three indexed reads per poll.
FOLLOW_POLL_SECONDS = 0.1
NO_WORKER_HINT_SECONDS = 10

# Where each service field comes from on this command's line, for error messages.
FIELD_SOURCES = {
    "environments": "--environments",
    "tags": "--tags",
    "exclude_tags": "--exclude-tags",
    "coordination_id": "--coordination-id",
    "version": "--version / DEPLOYMENT_VERSION",
    "ec2_instance_id": "--ec2-instance-id / EC2_INSTANCE_ID",
    "ec2_public_ip": "--ec2-public-ip / EC2_PUBLIC_IP",
    "ec2_deployment_config": "--ec2-config",
}
# Each rollout setting's flag (environments.rollout.KEYS): the value typed is turned into
# the setting's JSON value by rollout.parse_flag and checked by the service, as the API's.
ROLLOUT_FLAGS = {
    "batch_size": "--batch-size",
    "max_failures": "--max-failures",
    "pause_after_first_batch": "--pause-after-first",
    "batch_pause_seconds": "--batch-pause",
    "concurrency": "--concurrency",
}
FIELD_SOURCES.update({f"rollout.{key}": flag for key, flag in ROLLOUT_FLAGS.items()})


def _source(field: str) -> str:
    """`ec2_deployment_config.image_id` is `--ec2-config image_id` on this command line;
    `rollout.batch_size` is `--batch-size`."""
    if field in FIELD_SOURCES:
        return FIELD_SOURCES[field]
    name, _, key = field.partition(".")
    source = FIELD_SOURCES.get(name, name)
    return f"{source} {key}" if key else source


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    problem = bounds.FOLLOW_TIMEOUT.problem(value)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem}, not {text!r}")
    return value


class Command(BaseCommand):
    help = (
        "Start a local deployment after an EC2 platform deploy: every enabled environment (or those named, and "
        "those with any of --tags, less those with any of --exclude-tags) runs its init script. "
        "Reads EC2_INSTANCE_ID, EC2_PUBLIC_IP and DEPLOYMENT_VERSION; flags override. "
        "The rollout flags (--batch-size ... --concurrency) override the config file's deployment_settings for "
        "this deployment. Exit codes: 0 completed, 1 failed or cancelled, 2 bad input or a busy environment under "
        "--concurrency reject, 3 --timeout reached (the run goes on, awaiting approval too)."
    )
    # The deploy script's last line: Django's system checks (admin, URLs, DRF) add ~0.3 s
    # to every deploy and say nothing about this run; `qcluster` and `manage.py check`
    # (make lint) still run them.
    requires_system_checks = []

    def create_parser(self, prog_name, subcommand, **kwargs):
        # The product's flag --version (the deployment version) replaces Django's own.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--environments", help="Comma-separated environment ids (default: every enabled one).")
        parser.add_argument("--tags", help="Comma-separated tags: also every enabled environment that has any of them.")
        parser.add_argument(
            "--exclude-tags", help="Comma-separated tags: leave out every environment that has any of them."
        )
        parser.add_argument("--coordination-id", default="", help="Id for the new coordination (default: generated).")
        parser.add_argument("--version", dest="deployment_version", help="Deployment version (DEPLOYMENT_VERSION).")
        parser.add_argument("--ec2-instance-id", help="EC2 instance id (EC2_INSTANCE_ID).")
        parser.add_argument("--ec2-public-ip", help="EC2 public IP (EC2_PUBLIC_IP).")
        parser.add_argument(
            "--ec2-config",
            metavar="JSON",
            help=(
                'EC2 stage as JSON: {"instance_id": ...} waits for that instance, {"image_id", "instance_type", '
                '...} launches one; "platform_health_url" then waits for the platform (README).'
            ),
        )
        parser.add_argument(
            "--batch-size",
            metavar="SIZES",
            help="Run in waves: each comma-separated size (N or N%%) is the next wave's, the last repeats, "
            "e.g. 1,25%%,100%% (default: deployment_settings.batch_size; unset: one wave of everything).",
        )
        parser.add_argument(
            "--max-failures",
            metavar="N|N%",
            help="Once more than this many environments have failed, start no further one; the rest end cancelled "
            "(default: deployment_settings.max_failures; unset: no budget).",
        )
        parser.add_argument(
            "--pause-after-first",
            dest="pause_after_first_batch",
            metavar="approval|SECONDS",
            help="After the first wave (the canary): wait for an ADMIN's approval (deployment_approve ID), or this "
            "many seconds (default: deployment_settings.pause_after_first_batch).",
        )
        parser.add_argument(
            "--batch-pause",
            dest="batch_pause_seconds",
            metavar="SECONDS",
            help="Seconds to pause between later waves (default: deployment_settings.batch_pause_seconds).",
        )
        parser.add_argument(
            "--concurrency",
            metavar="queue|reject|supersede",
            help="An environment another running coordination holds: wait for it (queue, the default), start "
            "nothing and exit 2 (reject), or cancel the older run on it (supersede).",
        )
        parser.add_argument("--wait", action="store_true", help="Follow the run and print the stage log.")
        parser.add_argument(
            "--timeout", type=_positive_seconds, metavar="S", help="With --wait: stop waiting after S seconds."
        )
        parser.add_argument(
            "--output",
            action="store_true",
            help="With --wait: print every environment's output lines as they arrive, prefixed with its id.",
        )
        parser.add_argument("--json", action="store_true", help="Print the coordination record as JSON.")

    def handle(self, *args, **options):
        if options["output"] and not options["wait"]:
            raise CommandError("--output: only with --wait (it follows the run)", returncode=EXIT_BAD_INPUT)
        environment_ids = None
        if options["environments"] is not None:
            environment_ids = [item.strip() for item in options["environments"].split(",") if item.strip()]
        # Given but empty (`--tags "$UNSET"`) stays an empty list: an error, never "every environment".
        tags = None if options["tags"] is None else split_tags(options["tags"])
        exclude_tags = None if options["exclude_tags"] is None else split_tags(options["exclude_tags"])
        ec2_config = None
        if options["ec2_config"] is not None:
            try:
                ec2_config = json_input.loads(options["ec2_config"])
            except json_input.JSONInputError as exc:  # not JSON, too deep, a key twice, NaN
                raise CommandError(f"--ec2-config: {exc}", returncode=EXIT_BAD_INPUT) from None
        try:
            coordination = coordination_start(
                triggered_by=TriggerSource.COMMAND,
                environment_ids=environment_ids,
                tags=tags,
                exclude_tags=exclude_tags,
                coordination_id=options["coordination_id"],
                version=_flag_or_env(options["deployment_version"], "DEPLOYMENT_VERSION"),
                ec2_instance_id=_flag_or_env(options["ec2_instance_id"], "EC2_INSTANCE_ID"),
                ec2_public_ip=_flag_or_env(options["ec2_public_ip"], "EC2_PUBLIC_IP"),
                ec2_deployment_config=ec2_config,
                rollout=_rollout(options),
            )
        except ValidationError as exc:
            problems = [
                f"{_source(field)}: {message}" for field, messages in exc.message_dict.items() for message in messages
            ]
            raise CommandError("; ".join(problems), returncode=EXIT_BAD_INPUT) from None
        except EnvironmentsBusy as exc:  # concurrency: reject
            raise CommandError(
                f"{exc.message} (concurrency: reject; nothing started)", returncode=EXIT_BAD_INPUT
            ) from None

        if not options["wait"]:
            if options["json"]:
                self.stdout.write(coordination_json(coordination.coordination_id))
            else:
                name = coordination.coordination_id
                self.stdout.write(f"🚀 queued {name} (follow it with: deployment_status {name})")
            return
        output = OutputFollower(coordination.pk) if options["output"] else None
        code = self._follow(coordination, timeout=options["timeout"], quiet=options["json"], output=output)
        if options["json"]:
            self.stdout.write(coordination_json(coordination.coordination_id))
        if code:
            raise SystemExit(code)

    def _follow(self, coordination, *, timeout: float | None, quiet: bool, output: OutputFollower | None) -> int:
        """Print the coordination's events as they come until it has ended; while it awaits
        approval, say once how to approve or cancel it, and keep waiting."""
        started = time.monotonic()
        cursor = 0
        hinted = told_approval = False
        while True:
            coordination.refresh_from_db(fields=["status", "started_at", "finished_at"])
            # Read before the events: when it holds, no event can follow them. After a
            # cancel, the environments it hangs up still end (and say so) after it.
            finished = coordination_finished(coordination)
            events = StageEvent.objects.filter(coordination=coordination, id__gt=cursor).select_related("coordination")
            for event in events.order_by("id"):
                cursor = event.id
                if not quiet:
                    self.stdout.write(format_event(event))
            if output is not None:
                # With --json, stdout is the record alone: the output goes to stderr.
                for line in output.lines(final=finished):
                    (self.stderr if quiet else self.stdout).write(line)
            if finished:
                break
            if coordination.status == CoordinationStatus.AWAITING_APPROVAL and not told_approval:
                told_approval = True  # after the ✋ event: the status is read before the events
                # With --json, stdout is the record alone: the person waiting reads stderr.
                (self.stderr if quiet else self.stdout).write(approval_hint(coordination.coordination_id))
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                if not quiet:
                    self.stdout.write(
                        f"⏳ still {coordination.status} after {timeout:g} s; the run goes on "
                        f"(deployment_status {coordination.coordination_id})"
                    )
                return EXIT_STILL_RUNNING
            if not hinted and waited > NO_WORKER_HINT_SECONDS and coordination.status == CoordinationStatus.PENDING:
                hinted = True
                self.stderr.write("⏳ no worker has picked this up yet: is `python manage.py qcluster` running?")
            time.sleep(FOLLOW_POLL_SECONDS)
        if not quiet:
            self.stdout.write(format_total(coordination))
        return EXIT_COMPLETED if coordination.status == CoordinationStatus.COMPLETED else EXIT_FAILED


def _rollout(options: dict) -> dict | None:
    """The rollout settings given on the command line (only those: the config file's
    defaults stand for the others), as JSON values; None when none is given."""
    given = {key: rollout.parse_flag(key, options[key]) for key in ROLLOUT_FLAGS if options.get(key) is not None}
    return given or None


def _flag_or_env(flag: str | None, variable: str) -> str:
    return flag if flag is not None else os.environ.get(variable, "")
