"""The `powerautomation` command: a deploy script's and an operator's calls to the
platform's API. Each command takes --json. Exit codes: errors.py (0-3 as `manage.py
trigger_local`: completed, failed or cancelled, bad input, --timeout reached; 4 refused
(401/403); 5 the platform unavailable)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, TextIO

from powerautomation_client import __version__, trigger
from powerautomation_client.api import Client
from powerautomation_client.config import load_config
from powerautomation_client.errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    BadAnswerError,
    ClientError,
    ConflictError,
    NotFoundError,
)

PROGRESS_BUCKETS = ("succeeded", "failed", "cancelled", "running", "pending")
OUTPUT_READ_BYTES = 1024 * 1024
OUTPUT_MAX_PIECES = 64  # MiB; the platform keeps 10 MiB of an environment's output


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def summary_line(record: dict[str, Any]) -> str:
    progress = record["progress"]
    counts = f"{progress['done']}/{progress['total']} done: " + ", ".join(
        f"{progress[bucket]} {bucket}" for bucket in PROGRESS_BUCKETS if progress.get(bucket)
    )
    return f"{record['coordination_id']}  {record['status']:<17}  {record.get('version') or '-':<12}  {counts}"


def detail_text(record: dict[str, Any]) -> str:
    lines = [
        f"{record['coordination_id']}: {record['status']}",
        f"  version {record.get('version') or '-'}, created {record['created_at']}, "
        f"finished {record.get('finished_at') or '-'}",
    ]
    if record.get("error"):
        lines.append(f"  error: {record['error']}")
    for env in record.get("environments", []):
        exit_code = "-" if env.get("exit_code") is None else env["exit_code"]
        line = f"  {env['environment_id']:<24} {env['status']:<12} exit {exit_code!s:<4} attempts {env['attempts']}"
        if env.get("error"):
            line += f"  {env.get('reason')}: {env['error']}"
        lines.append(line)
    return "\n".join(lines)


def _checked_id(text: str) -> str:
    if not text or len(text) > 100 or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text[:100]!r} is not an id")
    return text


def cmd_status(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    if options.id is not None:
        try:
            record = client.coordination(options.id)
        except NotFoundError:
            raise ClientError(f"coordination_id: no coordination {options.id!r}") from None
        print(_dumps(record) if options.json else detail_text(record), file=out)
        return EXIT_OK
    active = client.status()["active"]
    if options.json:
        print(_dumps(active), file=out)
    for record in [] if options.json else active:
        print(summary_line(record), file=out)
    if not active and not options.json:
        print("no active coordinations", file=out)
    return EXIT_OK


def cmd_history(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    records = client.history(limit=options.limit)
    if options.json:
        print(_dumps(records), file=out)
    elif not records:
        print("no finished coordinations", file=out)
    for record in [] if options.json else records:
        print(summary_line(record), file=out)
    return EXIT_OK


def cmd_action(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    """cancel, approve, retry: exit 1 when the coordination's status does not allow it."""
    try:
        record = client.action(options.id, options.command)
    except NotFoundError:
        raise ClientError(f"coordination_id: no coordination {options.id!r}") from None
    except ConflictError as exc:
        raise ConflictError(exc.status, {"detail": f"{options.command}: {exc.message}"}) from None
    if options.json:
        print(_dumps(record), file=out)
    elif options.command == "retry":
        print(f"🔁 retry {record['coordination_id']} of {options.id}: {', '.join(record['environments'])}", file=out)
    else:
        print(f"{record['coordination_id']}: {record['status']}", file=out)
    return EXIT_OK


def cmd_environments(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    if options.action == "list":
        environments = list(client.environments())
        if options.json:
            print(_dumps(environments), file=out)
        for env in [] if options.json else environments:
            enabled = "enabled" if env.get("enabled") else "disabled"
            where = f"{env.get('host') or '-'}:{env.get('port')}" if env.get("host") else "-"
            print(f"{env['environment_id']:<24} {env['connection_method']:<9} {enabled:<8} {where}", file=out)
    elif options.action == "show":
        print(_dumps(client.environment(options.target)), file=out)
    elif options.action == "export":
        print(_dumps(client.config_export()), file=out)
    else:
        return _import(client, options, out)
    return EXIT_OK


def _import(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    try:
        with open(options.target, "rb") as handle:
            document = json.loads(handle.read(16 * 1024 * 1024).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise ClientError(f"FILE: cannot read {options.target!r} as JSON ({exc})") from None
    params = {"dry_run": "true" if options.dry_run else "false", "prune": "true" if options.prune else "false"}
    result = client.config_import(document, params=params)
    if options.json:
        print(_dumps(result), file=out)
        return EXIT_OK
    for warning in result.get("warnings", []):
        print(f"warning: {warning}", file=out)
    would = "would be " if result.get("dry_run") else ""
    for outcome in ("created", "updated", "unchanged", "deleted"):
        if result.get(outcome):
            print(f"{would}{outcome}: {', '.join(result[outcome])}", file=out)
    return EXIT_OK


def cmd_output(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    """The output piece by piece (1 MiB each): as text, written as it comes; as JSON, whole."""
    offset, pieces, piece = 0, [], None
    for _ in range(OUTPUT_MAX_PIECES):
        piece = client.output(options.id, options.environment, offset=offset, limit=OUTPUT_READ_BYTES)
        if options.json:
            pieces.append(piece["text"])
        else:
            out.write(piece["text"])
        # The end: nothing new (a running script's output so far), or all of it.
        if piece["next_offset"] == offset or piece["next_offset"] >= piece.get("length", piece["next_offset"] + 1):
            break
        offset = piece["next_offset"]
    else:
        raise BadAnswerError(f"the output goes on past {OUTPUT_MAX_PIECES} MiB: stopped")
    if options.json:
        print(_dumps({**piece, "offset": 0, "text": "".join(pieces)}), file=out)
    return EXIT_OK


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--url", default=default, help="The platform, e.g. https://coordinator (POWERAUTOMATION_URL).")
    parser.add_argument("--token-file", default=default, help="A file holding the API token (POWERAUTOMATION_TOKEN).")
    parser.add_argument("--json", action="store_true", default=default, help="Print JSON.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="powerautomation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--client-version", action="version", version=f"powerautomation-client {__version__}")
    _common(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, argparse.SUPPRESS)  # after the command too, without overwriting one given before it
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub = commands.add_parser("trigger-local", parents=[common], help="Start a local deployment (trigger_local).")
    trigger.add_arguments(sub)
    sub = commands.add_parser("status", parents=[common], help="The active coordinations, or one in full.")
    sub.add_argument("id", nargs="?", type=_checked_id, metavar="ID")
    sub = commands.add_parser("history", parents=[common], help="Finished coordinations, newest first.")
    sub.add_argument("--limit", type=_limit, default=10)
    for name, text in (("cancel", "Cancel a run."), ("retry", "Retry what failed."), ("approve", "Approve a rollout.")):
        commands.add_parser(name, parents=[common], help=text).add_argument("id", type=_checked_id, metavar="ID")
    sub = commands.add_parser("environments", parents=[common], help="list | show ID | import FILE | export")
    sub.add_argument("action", choices=("list", "show", "import", "export"))
    sub.add_argument("target", nargs="?", metavar="ID|FILE")
    sub.add_argument("--dry-run", action="store_true", help="import: show what would change; change nothing.")
    sub.add_argument("--prune", action="store_true", help="import: delete environments the file does not list.")
    sub = commands.add_parser("output", parents=[common], help="An environment's whole output in a run.")
    sub.add_argument("id", type=_checked_id, metavar="ID")
    sub.add_argument("environment", type=_checked_id, metavar="ENV")
    return parser


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 500:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 500, not {text!r}")
    return int(text)


COMMANDS: dict[str, Callable[[Client, argparse.Namespace, TextIO], int]] = {
    "status": cmd_status,
    "history": cmd_history,
    "cancel": cmd_action,
    "approve": cmd_action,
    "retry": cmd_action,
    "environments": cmd_environments,
    "output": cmd_output,
}


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    parser = build_parser()
    try:
        options = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a bad flag (2, as trigger_local's)
        return int(exc.code or 0)
    if options.command == "environments" and options.action in ("show", "import") and not options.target:
        wanted = "ID" if options.action == "show" else "FILE"
        print(f"powerautomation: environments {options.action}: give the {wanted}", file=err)
        return EXIT_BAD_INPUT
    try:
        client = Client(load_config(url=options.url, token_file=options.token_file))
        if options.command == "trigger-local":
            return trigger.run(client, options, out, err)
        return COMMANDS[options.command](client, options, out)
    except ClientError as exc:
        print(f"powerautomation: {exc}", file=err)
        return exc.exit_code
    except (KeyError, TypeError, AttributeError) as exc:  # an answer's inner shape, past the checks in api.py
        bad = BadAnswerError(f"the platform's answer is not what this client expects ({type(exc).__name__}: {exc})")
        print(f"powerautomation: {str(bad)[:300]}", file=err)
        return bad.exit_code
    except KeyboardInterrupt:
        print("powerautomation: interrupted (a run it started goes on on the platform)", file=err)
        return 130


__all__ = ["EXIT_BAD_INPUT", "build_parser", "main"]
