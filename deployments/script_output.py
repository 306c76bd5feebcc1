"""A script's whole output, per environment per coordination: appended as it arrives (one
OutputChunk row per piece, never one row rewritten), secrets masked before anything is
stored, and bounded by DEPLOYMENT_OUTPUT_MAX_BYTES. Past the cap the first and the last
halves are kept and readers see one marker line where the middle was dropped.

Offsets are bytes of the whole (masked) output as if nothing had been dropped, so a reader
following a running script asks for what follows the offset it was last given.

Writers: the worker's delivery threads (deployments.runner.output), polling agents
(deployments.agent_runs). Readers: the API, the admin, `trigger_local --output`.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Subquery, Value
from django.db.models.functions import Coalesce

from deployments.models import CoordinationTarget, OutputChunk
from environments.models import SECRET_FIELDS, RemoteEnvironment

MASK = "***"
# Secrets shorter than this are not masked: they would mask ordinary words of the output.
SHORTEST_MASKED_SECRET = 4
# Large pieces are stored as several rows, so the tail can be trimmed in small steps.
CHUNK_BYTES = 64 * 1024
# What output_append changes on a target besides output_bytes (which its writer counts).
OUTPUT_COLUMNS = ("output_length", "output_dropped", "output_held", "output_tail")


def dropped_marker(count: int) -> str:
    return f"[... {count} bytes dropped ...]\n"


def environment_secrets(environment: RemoteEnvironment | None, *extra: str) -> tuple[str, ...]:
    """The values an environment's output must not show: its password, API token and
    webhook secret, and its agent token when the caller holds it (only its hash is stored)."""
    values = [getattr(environment, name, "") or "" for name in SECRET_FIELDS] if environment else []
    values.extend(extra)
    # Longest first: a secret containing another one is masked whole.
    return tuple(sorted({v for v in values if len(v) >= SHORTEST_MASKED_SECRET}, key=len, reverse=True))


def mask(text: str, secrets: Iterable[str]) -> str:
    """Every occurrence of every secret as MASK: found in the text as it is (overlapping
    ones too, so masking one secret cannot leave part of another that overlaps it), the
    spans merged, each run of them one MASK."""
    spans = []
    for secret in secrets:
        start = text.find(secret)
        while start != -1:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    if not spans:
        return text
    spans.sort()
    parts, kept_from, masked_to = [], 0, -1
    for start, end in spans:
        if start > masked_to:  # a new masked run
            parts.extend((text[kept_from:start], MASK))
        masked_to = max(masked_to, end)
        kept_from = masked_to
    parts.append(text[kept_from:])
    return "".join(parts)


def _held_back(text: str, secrets: tuple[str, ...]) -> int:
    """How many characters at the end of `text` could be the start of a secret that the
    next piece completes: they wait for it (or for the end of the output)."""
    longest = 0
    for secret in secrets:
        for size in range(min(len(secret) - 1, len(text)), longest, -1):
            if text.endswith(secret[:size]):
                longest = size
                break
    return longest


def _utf8_cut(data: bytes, at: int) -> int:
    """The largest character boundary of `data` at or before byte `at`."""
    at = max(0, min(at, len(data)))
    while 0 < at < len(data) and (data[at] & 0xC0) == 0x80:
        at -= 1
    return at


def _pieces(text: str, position: int, half: int) -> list[tuple[int, bytes]]:
    """`text` starting at byte `position` as (position, bytes) rows, always split between
    characters: where the kept head ends, and in pieces of at most a quarter of the kept
    tail (so the tail is trimmed in small steps) and CHUNK_BYTES."""
    size = max(4, min(CHUNK_BYTES, half // 4))
    data = text.encode("utf-8")
    pieces = []
    start = 0
    while start < len(data):
        stop = start + size
        if position + start < half < position + stop:
            stop = half - position
        cut = _utf8_cut(data, stop) if stop < len(data) else len(data)
        if cut < len(data):  # end a piece after a line where one ends in its second half
            newline = data.rfind(b"\n", start + (cut - start) // 2, cut)
            cut = newline + 1 if newline != -1 else cut
        if cut <= start:  # a character longer than the room left: take it whole
            cut = start + 1
            while cut < len(data) and (data[cut] & 0xC0) == 0x80:
                cut += 1
        pieces.append((position + start, data[start:cut]))
        start = cut
    return pieces


def output_append(target: CoordinationTarget, received: str, *, secrets: tuple[str, ...], final: bool = False) -> dict:
    """Store what arrived for `target` (secrets masked) and return the target's columns
    that change, also set on `target`. `final`: the output has ended, nothing is held
    back. The caller serialises appends per target (one delivery thread, or a conditional
    update for agents) and runs this in its transaction."""
    # PostgreSQL keeps no NUL in text: a script printing one shows U+FFFD there.
    text = mask(target.output_held + received.replace("\x00", "\ufffd"), secrets)
    held = 0 if final else _held_back(text, secrets)
    if final and target.output_held and not received:
        # The output ended on what began like a secret: its start is not shown either.
        text = MASK if len(text) >= SHORTEST_MASKED_SECRET else text
    stored, target.output_held = (text[:-held], text[-held:]) if held else (text, "")
    changes = {"output_held": target.output_held}
    if not stored:
        return changes
    half = settings.DEPLOYMENT_OUTPUT_MAX_BYTES // 2
    rows = [
        OutputChunk(target=target, position=position, end=position + len(data), text=data.decode("utf-8"))
        for position, data in _pieces(stored, target.output_length, half)
    ]
    OutputChunk.objects.bulk_create(rows)
    target.output_length = rows[-1].end
    # Past the cap: the tail's pieces that start before its last half go (the head's stay).
    if target.output_length > 2 * half:
        kept = OutputChunk.objects.filter(target=target)
        head_end = _head_end(target)
        kept.filter(position__gte=head_end, position__lt=target.output_length - half).delete()
        tail_start = kept.filter(position__gte=head_end).order_by("position").values_list("position", flat=True)
        target.output_dropped = (tail_start.first() or target.output_length) - head_end
    tail = (target.output_tail + stored).encode("utf-8")[-settings.DEPLOYMENT_OUTPUT_TAIL_BYTES :]
    target.output_tail = tail.decode("utf-8", errors="ignore")
    changes.update(
        output_length=target.output_length, output_dropped=target.output_dropped, output_tail=target.output_tail
    )
    return changes


def _head_end(target: CoordinationTarget) -> int:
    """Where the kept head ends: the end of the last piece within the first half. Of the
    pieces that start before the half only the last may cross it (a character that
    straddles it), so it is one of the last two (two steps down the (target, position) index)."""
    half = settings.DEPLOYMENT_OUTPUT_MAX_BYTES // 2
    last = OutputChunk.objects.filter(target=target, position__lt=half).order_by("-position")
    return max((end for end in last.values_list("end", flat=True)[:2] if end <= half), default=0)


@dataclass(frozen=True)
class OutputSlice:
    text: str
    offset: int  # where `text` starts (after a skipped partial character)
    next_offset: int  # what to ask for next
    length: int  # the whole output's length so far
    dropped: int  # bytes of the middle not kept
    complete: bool  # the run has ended: nothing more will come


def output_read(target: CoordinationTarget, *, offset: int = 0, limit: int | None = None) -> OutputSlice:
    """The output from byte `offset` (at most `limit` bytes of it, whole characters), with
    the marker line where the dropped middle lies in between."""
    target.refresh_from_db(fields=["output_length", "output_dropped", "output_tail", "output_bytes", "status"])
    if not target.output_length and target.output_tail:
        return _legacy_read(target, offset)
    length = target.output_length
    offset = max(0, min(offset, length))
    budget = limit if limit is not None else length + 1
    parts: list[str] = []
    at = offset
    # From the piece that holds `offset` on, found down the (target, position) index.
    holder = OutputChunk.objects.filter(target=target, position__lte=offset).order_by("-position")
    start = Coalesce(Subquery(holder.values("position")[:1]), Value(0))
    chunks = OutputChunk.objects.filter(target=target, position__gte=start, end__gt=offset).order_by("position")
    for chunk in chunks.iterator(chunk_size=16):
        if budget <= 0:
            break
        marker = ""
        if at < chunk.position:  # the pieces are contiguous but where the middle was dropped
            before = parts[-1] if parts else _text_before(target, at)
            marker = ("" if before.endswith("\n") or not before else "\n") + dropped_marker(chunk.position - at)
        data = chunk.text.encode("utf-8")
        cut_from = max(0, at - chunk.position)
        while cut_from < len(data) and (data[cut_from] & 0xC0) == 0x80:
            cut_from += 1  # an offset inside a character: from the next one
        cut_to = _utf8_cut(data, cut_from + budget) if cut_from + budget < len(data) else len(data)
        if cut_to <= cut_from and cut_from < len(data):
            if at > offset:
                break  # not even one character fits the limit
            cut_to = cut_from + 1  # the first character goes whole (a limit under its bytes must not skip it)
            while cut_to < len(data) and (data[cut_to] & 0xC0) == 0x80:
                cut_to += 1
        # The marker only with what follows it: a reader stopped before it is told once.
        parts.extend((marker, data[cut_from:cut_to].decode("utf-8")))
        budget -= cut_to - cut_from
        at = chunk.position + cut_to
        if cut_to < len(data):
            break  # the limit ended inside this piece
    return OutputSlice(
        text="".join(parts),
        offset=offset,
        next_offset=at if at > offset or budget <= 0 else length,
        length=length,
        dropped=target.output_dropped,
        complete=target.is_terminal,
    )


def _text_before(target: CoordinationTarget, offset: int) -> str:
    """The piece that ends at `offset` ('' at the start)."""
    return OutputChunk.objects.filter(target=target, end=offset).values_list("text", flat=True).first() or ""


def _legacy_read(target: CoordinationTarget, offset: int) -> OutputSlice:
    """A record from before whole output was kept: only its tail exists."""
    dropped = max(0, target.output_bytes - len(target.output_tail.encode("utf-8")))
    text = ""
    if offset == 0:
        text = (dropped_marker(dropped) if dropped else "") + target.output_tail
    return OutputSlice(
        text=text,
        offset=0,
        next_offset=target.output_bytes,
        length=target.output_bytes,
        dropped=dropped,
        complete=target.is_terminal,
    )


def output_lengths(coordination_pk: int) -> list[tuple[int, str, int]]:
    """(target pk, environment id, output length) of each of a coordination's targets."""
    targets = CoordinationTarget.objects.filter(coordination_id=coordination_pk).order_by("environment_id")
    return list(targets.values_list("pk", "environment_id", "output_length"))
