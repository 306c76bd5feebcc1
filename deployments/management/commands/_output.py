"""`trigger_local --wait --output`: every environment's output lines as they arrive,
prefixed with the environment's id, in order per environment (whole lines only, the last
one once the run has ended)."""

import unicodedata

from deployments.models import CoordinationTarget
from deployments.script_output import output_lengths, output_read

# Output is read in pieces of this size (bounded memory for a 10 MiB output).
READ_BYTES = 1024 * 1024


def shown_line(text: str) -> str:
    """A line as a terminal may print it: a hostile machine's escape sequences are shown,
    not obeyed."""
    return "".join(
        char if char == "\t" or not unicodedata.category(char).startswith("C") else repr(char)[1:-1] for char in text
    )


class OutputFollower:
    def __init__(self, coordination_pk: int) -> None:
        self.coordination_pk = coordination_pk
        self.offsets: dict[int, int] = {}
        self.partial: dict[int, str] = {}

    def lines(self, *, final: bool = False) -> list[str]:
        """What arrived since the last call, as printable lines; `final`: the run has
        ended, an unfinished last line is given too."""
        shown = []
        for pk, environment_id, length in output_lengths(self.coordination_pk):
            while self.offsets.get(pk, 0) < length:
                piece = output_read(CoordinationTarget(pk=pk), offset=self.offsets.get(pk, 0), limit=READ_BYTES)
                if piece.next_offset <= self.offsets.get(pk, 0):
                    break
                self.offsets[pk] = piece.next_offset
                *complete, self.partial[pk] = (self.partial.get(pk, "") + piece.text).split("\n")
                shown.extend(f"[{environment_id}] {shown_line(line)}" for line in complete)
            if final and self.partial.get(pk):
                shown.append(f"[{environment_id}] {shown_line(self.partial.pop(pk))}")
        return shown
