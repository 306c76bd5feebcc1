"""The whole output store (deployments/script_output.py) and its API, in-process: appended
as it arrives, read whole or from an offset, head + marker + tail past the cap, secrets
masked across pieces, flat per-append cost. The end-to-end runs (a real sshd, a real
agent, `trigger_local --output`) are in test_output_e2e.py."""

import random
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deployments.models import CoordinationTarget, OutputChunk, TargetStatus as T
from deployments.script_output import MASK, dropped_marker, environment_secrets, mask, output_append, output_read
from tests.factories import make_coordination, make_environment, make_user, token_client

pytestmark = pytest.mark.django_db

PASSWORD = "s3cret-pass-word"  # noqa: S105 (a test value)


@pytest.fixture
def target():
    make_environment("linux-1", password=PASSWORD, ssh_key_path="")
    make_coordination("deploy-out-1", "local_deploying", {"linux-1": T.RUNNING})
    return CoordinationTarget.objects.select_related("remote_environment").get()


def append(target, text, *, secrets=(), final=False):
    changes = output_append(target, text, secrets=secrets, final=final)
    CoordinationTarget.objects.filter(pk=target.pk).update(**changes)


def read_all(target, **kwargs) -> str:
    return output_read(target, **kwargs).text


def follow(target, *, limit: int) -> str:
    """What a reader following with ?offset= and a small limit puts together."""
    parts, offset = [], 0
    for _ in range(100_000):
        piece = output_read(target, offset=offset, limit=limit)
        parts.append(piece.text)
        if piece.next_offset == offset:
            return "".join(parts)
        offset = piece.next_offset
    raise AssertionError("the reader never caught up")


def test_output_is_kept_whole_in_the_order_it_arrived(target, settings):
    lines = [f"line {n} ü€😀\n" for n in range(2000)]
    for line in lines:
        append(target, line)
    whole = "".join(lines)
    assert read_all(target) == whole
    assert follow(target, limit=1000) == whole
    target.refresh_from_db()
    assert target.output_length == len(whole.encode()) and target.output_dropped == 0
    # The inline tail: the end, whole characters only.
    assert target.output_tail == whole.encode()[-settings.DEPLOYMENT_OUTPUT_TAIL_BYTES :].decode(errors="ignore")


def test_past_the_cap_the_first_and_last_halves_are_kept_with_one_marker(target, settings):
    settings.DEPLOYMENT_OUTPUT_MAX_BYTES = cap = 64 * 1024
    rng = random.Random(7)
    pieces = [f"{n}:" + "ä€x😀"[rng.randrange(4)] * rng.randrange(1, 9000) + "\n" for n in range(400)]
    for piece in pieces:
        append(target, piece)
    whole = "".join(pieces).encode()

    text = read_all(target)
    markers = re.findall(r"\[\.\.\. (\d+) bytes dropped \.\.\.\]\n", text)
    assert len(markers) == 1
    head, tail = text.split(dropped_marker(int(markers[0])))
    assert head.endswith("\n")  # the marker is a line of its own
    if not whole.startswith(head.encode()):
        head = head[:-1]  # the head ended inside a line: the marker's line break was added
    assert whole.startswith(head.encode()) and whole.endswith(tail.encode())
    assert cap // 2 - cap // 8 <= len(head.encode()) <= cap // 2
    assert cap // 2 - cap // 8 <= len(tail.encode()) <= cap // 2  # trimmed in pieces of cap/8
    assert len(head.encode()) + int(markers[0]) + len(tail.encode()) == len(whole)
    # What is stored stays within the cap and one piece, however long the output grows.
    stored = sum(len(t.encode()) for t in OutputChunk.objects.filter(target=target).values_list("text", flat=True))
    assert stored <= cap
    target.refresh_from_db()
    assert target.output_length == len(whole)
    assert target.output_dropped == int(markers[0])
    # A reader following along sees the same thing.
    assert follow(target, limit=3000) == text


def test_a_reader_behind_the_dropped_middle_is_told_how_much_it_missed(target, settings):
    settings.DEPLOYMENT_OUTPUT_MAX_BYTES = 4096
    append(target, "a" * 1000)
    first = output_read(target, offset=0)
    assert first.text == "a" * 1000 and first.next_offset == 1000
    append(target, "b" * 10_000)
    later = output_read(target, offset=first.next_offset)
    # The head (the first 2048 bytes) goes on after what the reader had; then the marker.
    head, marker, tail = later.text.partition(dropped_marker(later.dropped))
    assert head == "b" * 1048 + "\n" and marker and set(tail) == {"b"}  # a line break before the marker
    assert 1048 + later.dropped + len(tail) == 10_000
    assert 2048 - 512 <= len(tail) <= 2048
    assert later.next_offset == 11_000


def test_an_offset_inside_a_character_starts_at_the_next_one(target):
    append(target, "é" * 10)  # 2 bytes each
    piece = output_read(target, offset=3)
    assert piece.text == "é" * 8
    assert output_read(target, offset=20).text == ""
    assert output_read(target, offset=10**12).next_offset == 20


def test_a_limit_smaller_than_a_character_returns_that_character_and_skips_nothing(target):
    append(target, "ab€cd")  # € is 3 bytes
    piece = output_read(target, offset=2, limit=1)
    assert piece.text == "€" and piece.next_offset == 5  # not next_offset = length, losing "€cd"
    assert follow(target, limit=1) == "ab€cd"
    assert follow(target, limit=2) == "ab€cd"


def test_secrets_are_masked_even_split_across_pieces(target):
    secrets = environment_secrets(target.remote_environment, "agent-token-" + "x" * 40)
    assert PASSWORD in secrets
    append(target, f"echo {PASSWORD[:5]}", secrets=secrets)
    append(target, f"{PASSWORD[5:]} done; agent-token-", secrets=secrets)
    append(target, "x" * 40 + "\nbye ", secrets=secrets)
    append(target, "s3c", secrets=secrets)  # the output ends on what starts like the password
    append(target, "", secrets=secrets, final=True)
    text = read_all(target)
    assert PASSWORD not in text and "x" * 40 not in text
    assert text == f"echo {MASK} done; {MASK}\nbye s3c"
    assert PASSWORD not in "".join(OutputChunk.objects.values_list("text", flat=True))
    target.refresh_from_db()
    assert PASSWORD[:5] not in target.output_tail


def test_a_nul_character_is_stored_as_a_replacement_character(target):
    append(target, "before\x00after\n")
    assert read_all(target) == "before\ufffdafter\n"


def test_an_append_costs_the_same_queries_at_five_megabytes_as_at_the_start(target, settings):
    settings.DEPLOYMENT_OUTPUT_MAX_BYTES = 1024 * 1024
    piece = "0123456789abcdef" * 256 + "\n"
    with CaptureQueriesContext(connection) as early:
        append(target, piece)
    for _ in range(1250):  # about 5 MB
        append(target, piece)
    with CaptureQueriesContext(connection) as late:
        append(target, piece)
    # Past the cap: the trim, and where the head ends and the tail starts (indexed).
    assert len(late.captured_queries) <= len(early.captured_queries) + 3
    assert OutputChunk.objects.filter(target=target).count() < 300  # the cap's head and tail only


def test_a_record_from_before_whole_output_reads_as_its_tail(target):
    CoordinationTarget.objects.filter(pk=target.pk).update(output_tail="the end\n", output_bytes=100)
    assert read_all(target) == dropped_marker(92) + "the end\n"


def test_the_api_returns_the_output_as_text_and_json_to_a_viewer(target):
    append(target, "hello\nworld\n")
    client = token_client(make_user("viewer", "VIEWER"))
    url = "/api/deployment/coordinations/deploy-out-1/environments/linux-1/output"

    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response.content == b"hello\nworld\n"
    assert response["X-Output-Next-Offset"] == "12" and response["X-Output-Complete"] == "false"

    follow_up = client.get(url + "?offset=6", HTTP_ACCEPT="application/json").json()
    assert follow_up["text"] == "world\n" and follow_up["next_offset"] == 12 and follow_up["offset"] == 6
    assert client.get(url + "?format=json&offset=12").json()["text"] == ""

    record = client.get("/api/deployment/coordinations/deploy-out-1/").json()
    assert record["environments"][0]["output_url"] == "http://testserver" + url
    download = client.get(url + "?download=1")
    assert download["Content-Disposition"] == 'attachment; filename="deploy-out-1-linux-1.log"'


@pytest.mark.parametrize(
    ("query", "field"), [("offset=-1", "offset"), ("offset=abc", "offset"), ("limit=0", "limit"), ("limit=x", "limit")]
)
def test_the_api_refuses_a_bad_offset_or_limit_naming_it(target, query, field):
    client = token_client(make_user("viewer", "VIEWER"))
    url = f"/api/deployment/coordinations/deploy-out-1/environments/linux-1/output?format=json&{query}"
    response = client.get(url)
    assert response.status_code == 400
    assert field in response.json()


def test_the_api_answers_404_for_an_unknown_environment_and_401_without_a_token(target, client):
    viewer = token_client(make_user("viewer", "VIEWER"))
    assert viewer.get("/api/deployment/coordinations/deploy-out-1/environments/nope/output").status_code == 404
    assert viewer.get("/api/deployment/coordinations/nope/environments/linux-1/output").status_code == 404
    assert client.get("/api/deployment/coordinations/deploy-out-1/environments/linux-1/output").status_code == 401


@pytest.mark.parametrize(
    ("text", "secrets", "stored"),
    [
        # Overlapping secrets: masking one must not leave part of the other.
        ("xx abcdefghijkl yy", ("abcdefgh", "efghijkl"), "xx *** yy"),
        ("xx abcdefghijkl yy", ("efghijkl", "abcdefgh"), "xx *** yy"),
        ("aaaaaa", ("aaaa",), "***"),
        ("one s3cret, two s3cret", ("s3cret",), "one ***, two ***"),
        ("nothing here", ("s3cret",), "nothing here"),
    ],
)
def test_every_occurrence_of_every_secret_is_masked_whole(text, secrets, stored):
    assert mask(text, secrets) == stored


def test_a_follower_with_a_tiny_limit_is_told_of_the_dropped_middle_once(target, settings):
    settings.DEPLOYMENT_OUTPUT_MAX_BYTES = 4096
    append(target, "é" * 5000 + "\n")
    whole = read_all(target)
    assert follow(target, limit=1) == whole and whole.count("bytes dropped") == 1
