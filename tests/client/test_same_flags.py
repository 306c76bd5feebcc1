"""The client's `trigger-local` and `manage.py trigger_local` are written twice (the client
cannot import Django): every flag of the command must be the client's too, so a deploy
script can move from one to the other by changing only the command's name."""

import argparse
import sys

from deployments.management.commands.trigger_local import Command
from tests.support.client_venv import CLIENT

sys.path.insert(0, str(CLIENT / "src"))
from powerautomation_client.cli import build_parser  # noqa: E402

# Django's own options of every management command, not trigger_local's.
DJANGO_OPTIONS = {
    "--version",
    "--verbosity",
    "-v",
    "--settings",
    "--pythonpath",
    "--traceback",
    "--no-color",
    "--force-color",
    "--skip-checks",
    "-h",
    "--help",
}


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def test_every_trigger_local_flag_is_a_flag_of_the_clients_trigger_local():
    command = option_strings(Command().create_parser("manage.py", "trigger_local"))
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    client = option_strings(subcommands.choices["trigger-local"])
    # `--version` is Django's and trigger_local's own (the deployment version): both have it.
    assert (command - DJANGO_OPTIONS) | {"--version"} <= client
    assert command - DJANGO_OPTIONS  # the comparison saw trigger_local's flags
