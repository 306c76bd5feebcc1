"""`powerautomation trigger-local`: `manage.py trigger_local` over the API, with its
flags, environment variables, stage log and exit codes."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, TextIO

from powerautomation_client.api import Client
from powerautomation_client.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STILL_RUNNING,
    ClientError,
    ConflictError,
    ValidationError,
)
from powerautomation_client.follow import Follower

FOLLOW_TIMEOUT_MAX = 7 * 24 * 3600  # environments.bounds.FOLLOW_TIMEOUT

# Where each of the API's fields comes from on this command line, for error messages
# (trigger_local.FIELD_SOURCES, by the API's field names).
FIELD_SOURCES = {
    "environments": "--environments",
    "tags": "--tags",
    "exclude_tags": "--exclude-tags",
    "coordination_id": "--coordination-id",
    "version": "--version / DEPLOYMENT_VERSION",
    "ec2.instance_id": "--ec2-instance-id / EC2_INSTANCE_ID",
    "ec2.public_ip": "--ec2-public-ip / EC2_PUBLIC_IP",
    "ec2_deployment_config": "--ec2-config",
}
ROLLOUT_FLAGS = {
    "batch_size": "--batch-size",
    "max_failures": "--max-failures",
    "pause_after_first_batch": "--pause-after-first",
    "batch_pause_seconds": "--batch-pause",
    "concurrency": "--concurrency",
}
FIELD_SOURCES.update({f"rollout.{key}": flag for key, flag in ROLLOUT_FLAGS.items()})


class BadInput(ClientError):
    """Refused on this machine, before any request."""


def source(field: str) -> str:
    """`ec2_deployment_config.image_id` is `--ec2-config image_id`; `rollout.batch_size` is `--batch-size`."""
    if field in FIELD_SOURCES:
        return FIELD_SOURCES[field]
    name, _, key = field.partition(".")
    flag = FIELD_SOURCES.get(name, name)
    return f"{flag} {key}" if key else flag


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not (0 < value <= FOLLOW_TIMEOUT_MAX):  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"must be a number greater than 0 to {FOLLOW_TIMEOUT_MAX} seconds (7 days), not {text!r}"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--environments", help="Comma-separated environment ids (default: every enabled one).")
    add("--tags", help="Comma-separated tags: also every enabled environment that has any of them.")
    add("--exclude-tags", help="Comma-separated tags: leave out every environment that has any of them.")
    add("--coordination-id", default="", help="Id for the new coordination (default: generated).")
    add("--version", dest="deployment_version", help="Deployment version (DEPLOYMENT_VERSION).")
    add("--ec2-instance-id", help="EC2 instance id (EC2_INSTANCE_ID).")
    add("--ec2-public-ip", help="EC2 public IP (EC2_PUBLIC_IP).")
    add("--ec2-config", metavar="JSON", help="The EC2 stage as JSON (see the platform's README).")
    add("--batch-size", metavar="SIZES", help="Run in waves: comma-separated sizes (N or N%%), the last repeats.")
    add("--max-failures", metavar="N|N%", help="Start no further environment once more than this have failed.")
    add(
        "--pause-after-first",
        dest="pause_after_first_batch",
        metavar="approval|SECONDS",
        help="After the first wave: wait for an ADMIN's approval, or this many seconds.",
    )
    add("--batch-pause", dest="batch_pause_seconds", metavar="SECONDS", help="Seconds between later waves.")
    add(
        "--concurrency",
        metavar="queue|reject|supersede",
        help="An environment another run holds: wait, exit 2, or cancel the older run.",
    )
    add("--wait", action="store_true", help="Follow the run and print the stage log.")
    add("--timeout", type=positive_seconds, metavar="S", help="With --wait: stop waiting after S seconds (exit 3).")
    add("--output", action="store_true", help="With --wait: print every environment's output lines too.")
    add("--idempotency-key", help="Sent as Idempotency-Key (default: a new UUID): a replay starts nothing twice.")


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _rollout_value(key: str, text: str) -> Any:
    """A typed value (`1,25%,100%`, `approval`, `30`) as the setting's JSON value
    (environments.rollout.parse_flag); the platform validates it."""
    text = text.strip()
    if key == "concurrency" or (key == "pause_after_first_batch" and text == "approval"):
        return text
    items = [item.strip() for item in text.split(",")] if key == "batch_size" else [text]
    values: list[Any] = []
    for item in items:
        digits = item[1:] if item.startswith("-") else item
        values.append(int(item) if digits.isdigit() and digits.isascii() and len(digits) <= 9 else item)
    return values if key == "batch_size" and len(values) > 1 else values[0]


def _flag_or_env(flag: str | None, variable: str) -> str:
    return flag if flag is not None else os.environ.get(variable, "")


def request_body(options: argparse.Namespace) -> dict[str, Any]:
    """The trigger-local request this command line asks for; BadInput naming the flag."""
    body: dict[str, Any] = {
        "coordination_id": options.coordination_id,
        "version": _flag_or_env(options.deployment_version, "DEPLOYMENT_VERSION"),
        "ec2": {
            "instance_id": _flag_or_env(options.ec2_instance_id, "EC2_INSTANCE_ID"),
            "public_ip": _flag_or_env(options.ec2_public_ip, "EC2_PUBLIC_IP"),
        },
    }
    if options.environments is not None:
        body["environments"] = _split(options.environments)
    # Given but empty (`--tags "$UNSET"`) stays an empty list: an error, never "every environment".
    for name in ("tags", "exclude_tags"):
        if getattr(options, name) is not None:
            body[name] = _split(getattr(options, name))
    if options.ec2_config is not None:
        try:
            body["ec2_deployment_config"] = json.loads(options.ec2_config)
        except ValueError as exc:
            raise BadInput(f"--ec2-config: not JSON ({exc})") from None
    rollout = {key: _rollout_value(key, getattr(options, key)) for key in ROLLOUT_FLAGS if getattr(options, key)}
    if rollout:
        body["rollout"] = rollout
    return body


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def run(client: Client, options: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if options.output and not options.wait:
        raise BadInput("--output: only with --wait (it follows the run)")
    body = request_body(options)
    try:
        accepted = client.trigger_local(body, idempotency_key=options.idempotency_key)
    except ValidationError as exc:
        raise BadInput("; ".join(f"{source(field)}: {message}" for field, message in exc.errors)) from None
    except ConflictError as exc:
        if exc.status == 409:  # concurrency: reject
            raise BadInput(f"{exc.message} (concurrency: reject; nothing started)") from None
        raise
    coordination_id = accepted["coordination_id"]
    if not options.wait:
        if options.json:
            print(_dumps(client.coordination(coordination_id)), file=out)
        else:
            print(f"🚀 queued {coordination_id} (follow it with: powerautomation status {coordination_id})", file=out)
        return EXIT_OK
    follower = Follower(client, coordination_id, output=options.output)
    for kind, line in follower.follow(timeout=options.timeout):
        if kind == "log":
            if not options.json:
                print(line, file=out, flush=True)
        else:
            # With --json, stdout is the record alone: output and hints go to stderr.
            print(line, file=err if options.json or kind == "notice" else out, flush=True)
    if options.json:
        print(_dumps(follower.record or client.coordination(coordination_id)), file=out)
    if follower.timed_out:
        return EXIT_STILL_RUNNING
    return EXIT_OK if follower.status == "completed" else EXIT_FAILED


__all__ = ["EXIT_BAD_INPUT", "BadInput", "add_arguments", "run"]
