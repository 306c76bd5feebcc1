"""Script output as it arrives: kept in memory between batches and appended with the batch
it arrived in (so a crash loses none of it), secrets masked (deployments.script_output).

A detached run's output also moves its `remote_offset` (how far into the run's output file
it is recorded). That move is a compare-and-set: a worker presumed dead whose run another
worker re-attached to finds the offset moved and appends nothing, so no byte is recorded
twice."""

import logging

from django.db import transaction

from deployments.models import CoordinationTarget
from deployments.script_output import environment_secrets, output_append

logger = logging.getLogger(__name__)


class OutputBook:
    def __init__(self) -> None:
        self.pending: dict[int, list[str]] = {}
        self.offsets: dict[int, int] = {}
        self.secrets: dict[int, tuple[str, ...]] = {}
        # Detached runs whose offset another worker moved: this one records no more of them.
        self.lost: set[int] = set()

    def add(self, target_pk: int, text: str, end_offset: int | None = None) -> None:
        if target_pk in self.lost:
            return
        self.pending.setdefault(target_pk, []).append(text)
        if end_offset is not None:
            self.offsets[target_pk] = end_offset

    def fields_for(self, target: CoordinationTarget, *, final: bool = False) -> dict:
        """Append what arrived for `target` since the last write and return its columns
        that change (also set on `target`); `final`: the output has ended."""
        if not self._offset_moved(target):
            return {}
        chunks = self.pending.pop(target.pk, None)
        if not chunks and not (final and target.output_held):
            return {}
        received = "".join(chunks or ())
        if target.pk not in self.secrets:
            self.secrets[target.pk] = environment_secrets(target.remote_environment)
        changes = output_append(target, received, secrets=self.secrets[target.pk], final=final)
        if received:
            target.output_bytes += len(received.encode("utf-8"))
            changes["output_bytes"] = target.output_bytes
        return changes

    def _offset_moved(self, target: CoordinationTarget) -> bool:
        """Move a detached run's recorded offset from what this worker last recorded to
        where the pending output ends; False (the output dropped) when it was not there."""
        if target.pk in self.lost:
            self.pending.pop(target.pk, None)
            return False
        end = self.offsets.pop(target.pk, None)
        if end is None or end == target.remote_offset:
            return True
        if CoordinationTarget.objects.filter(pk=target.pk, remote_offset=target.remote_offset).update(
            remote_offset=end
        ):
            target.remote_offset = end
            return True
        self.lost.add(target.pk)
        self.pending.pop(target.pk, None)
        logger.warning(
            "%s: another worker records this run's output now; this one stops",
            target.environment_id,
            extra={"environment_id": target.environment_id},
        )
        return False

    def flush(self, targets: dict[int, CoordinationTarget]) -> None:
        with transaction.atomic():
            for target_pk in list(self.pending):
                if fields := self.fields_for(targets[target_pk]):
                    CoordinationTarget.objects.filter(pk=target_pk).update(**fields)
