"""Whole output end to end: scripts that print megabytes over a real sshd, run by a real
`qcluster`, followed by `trigger_local --wait --output` in its own process, then read back
whole from the API and the admin (and past the cap: head, marker, tail)."""

import re

import pytest

from accounts.roles import VIEWER
from deployments.models import Coordination, CoordinationTarget, TargetStatus as T
from deployments.script_output import dropped_marker
from tests.factories import make_staff, make_user, signed_in, token_client
from tests.support.processes import manage

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SECRET = "hunter2-correct-horse-7f3a"  # noqa: S105 (a test value)
CAP = 8 * 1024 * 1024
# 5 MB: 50,000 numbered lines of 100 bytes each (sed is fast where a shell loop is not).
FIVE_MB = "seq 1 50000 | sed 's/$/ %s/' | cut -c1-99\n" % ("." * 88 + "x")
# 9.6 MB: past the 8 MiB cap.
NINE_MB = FIVE_MB.replace("50000", "96000")


def expected_lines(count: int) -> list[str]:
    return [f"{n} {'.' * 88}x"[:99] for n in range(1, count + 1)]


def test_megabytes_of_output_are_kept_whole_streamed_by_trigger_local_and_read_back(
    sshd, make_ssh_environment, start_qcluster, no_retry_delay
):
    whole = sshd.script("whole.sh", f"echo 'token is {SECRET}'\n{FIVE_MB}printf 'no newline at the end'\n")
    capped = sshd.script("capped.sh", f"{NINE_MB}echo 'the very end'\nexit 3\n")
    make_ssh_environment("whole_env", whole, password=SECRET, timeout=120)
    make_ssh_environment("capped_env", capped, timeout=120)
    qcluster = start_qcluster(DEPLOYMENT_OUTPUT_MAX_BYTES=str(CAP))

    result = manage(["trigger_local", "--wait", "--output"], qcluster.env, timeout=300)

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr + qcluster.output()
    printed = result.stdout.splitlines()
    # Every line of the 5 MB output, in order, prefixed; the secret masked.
    mine = [line.removeprefix("[whole_env] ") for line in printed if line.startswith("[whole_env] ")]
    assert mine == ["token is ***", *expected_lines(50000), "no newline at the end"]
    assert SECRET not in result.stdout
    # The capped one: a follower that keeps up sees every line (storage is what is capped);
    # one that falls behind is told, in one marker line, how much it missed.
    full = "\n".join([*expected_lines(96000), "the very end"]) + "\n"
    theirs = "".join(line.removeprefix("[capped_env] ") + "\n" for line in printed if line.startswith("[capped_env] "))
    markers = re.findall(r"^\[\.\.\. \d+ bytes dropped \.\.\.\]\n", theirs, flags=re.MULTILINE)
    assert len(markers) <= 1
    head, _, tail = theirs.partition(markers[0] if markers else "\0")
    # (A marker after a line cut short by the drop starts on a line of its own.)
    assert (full.startswith(head) or full.startswith(head[:-1])) and full.endswith(tail or full)
    assert any(line.startswith("❌ capped_env") for line in printed)
    # Stage log lines come with the output, not instead of it.
    assert any(line.startswith("🎯") or line.startswith("⏱️  total") for line in printed)

    coordination = Coordination.objects.get()
    api = token_client(make_user("viewer", VIEWER))
    base = f"/api/deployment/coordinations/{coordination.coordination_id}/environments"
    body = api.get(f"{base}/whole_env/output").content.decode()
    assert body == "\n".join(["token is ***", *expected_lines(50000), "no newline at the end"])
    admin = signed_in(make_staff("watcher", VIEWER))
    download = admin.get(f"/admin/deployments/coordination/{coordination.pk}/output/whole_env/?download=1")
    assert download.status_code == 200 and download.content.decode() == body

    capped_text = api.get(f"{base}/capped_env/output").content.decode()
    target = CoordinationTarget.objects.get(environment_id="capped_env")
    assert target.status == T.FAILED and target.exit_code == 3
    head, marker, tail = capped_text.partition(dropped_marker(target.output_dropped))
    assert marker and head.endswith("\n")  # the marker is a line of its own
    if not full.startswith(head):
        head = head[:-1]  # the head ended inside a line: the marker's line break was added
    assert full.startswith(head) and full.endswith(tail)
    assert len(head.encode()) + target.output_dropped + len(tail.encode()) == len(full.encode())
    assert len(capped_text.encode()) <= CAP + len(marker)
    assert (
        admin.get(f"/admin/deployments/coordination/{coordination.pk}/output/capped_env/?download=1").content.decode()
        == capped_text
    )
