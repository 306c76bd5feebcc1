"""What the commands that act on one coordination share: finding it by the id typed on the
command line, naming the machine account that acts, and printing it as JSON. (A module
whose name starts with `_` is not a command.)"""

import getpass
import json
import socket
import unicodedata

from django.core.management.base import CommandError

from deployments.models import Coordination
from deployments.patterns import COORDINATION_ID, COORDINATION_ID_HINT, matches
from deployments.selectors import coordination_detail

EXIT_DONE, EXIT_CONFLICT, EXIT_BAD_INPUT = 0, 1, 2
# An id longer than any real one (100 characters) is quoted only in part.
SHOWN_ID_CHARS = 100
ACTOR_PART_CHARS = 64


def shown_id(coordination_id: str) -> str:
    """The id as an error message quotes it: escaped (repr) and bounded."""
    if len(coordination_id) <= SHOWN_ID_CHARS:
        return repr(coordination_id)
    return f"{coordination_id[:SHOWN_ID_CHARS]!r}… ({len(coordination_id)} characters)"


def coordination_named(coordination_id: str) -> Coordination:
    """The coordination with this id, every target loaded; exit 2 naming the id when the
    id is malformed or no coordination has it."""
    if not matches(COORDINATION_ID, coordination_id):
        raise CommandError(
            f"coordination_id: {shown_id(coordination_id)} is not a coordination id ({COORDINATION_ID_HINT})",
            returncode=EXIT_BAD_INPUT,
        )
    coordination = coordination_detail(coordination_id)
    if coordination is None:
        raise CommandError(f"coordination_id: no coordination {shown_id(coordination_id)}", returncode=EXIT_BAD_INPUT)
    return coordination


def dumps(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def coordination_json(coordination_id: str) -> str:
    """The coordination as the API's detail (and `deployment_status --json`) shows it."""
    # Imported here: the REST framework's serializers are ~0.1 s of every deploy's start-up
    # (`trigger_local`), and only --json needs them.
    from deployments.api.serializers import CoordinationDetailSerializer

    return dumps(CoordinationDetailSerializer(coordination_detail(coordination_id)).data)


def _printable(text: str) -> str:
    """No control characters (a terminal escape, a newline) and a bounded length: the
    name ends up in events, the admin and notifications."""
    kept = "".join(char for char in text if not unicodedata.category(char).startswith("C"))
    return kept.strip()[:ACTOR_PART_CHARS] or "unknown"


def machine_actor() -> str:
    """Who acts when a command approves or cancels: the machine account running it,
    e.g. `command (root@build-host)`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment and no passwd entry
        user = ""
    return f"command ({_printable(user)}@{_printable(socket.gethostname())})"


def approval_hint(coordination_id: str) -> str:
    """How to go on from a rollout awaiting approval."""
    return (
        f"✋ awaiting approval: python manage.py deployment_approve {coordination_id} (or the admin's Approve, "
        f"or POST /api/deployment/coordinations/{coordination_id}/approve/); "
        f"deployment_cancel {coordination_id} stops it"
    )
