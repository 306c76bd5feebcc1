"""Script output as it arrives: kept in memory between batches and appended with the batch
it arrived in (so a crash loses none of it), secrets masked (deployments.script_output)."""

from django.db import transaction

from deployments.models import CoordinationTarget
from deployments.script_output import environment_secrets, output_append


class OutputBook:
    def __init__(self) -> None:
        self.pending: dict[int, list[str]] = {}
        self.secrets: dict[int, tuple[str, ...]] = {}

    def add(self, target_pk: int, text: str) -> None:
        self.pending.setdefault(target_pk, []).append(text)

    def fields_for(self, target: CoordinationTarget, *, final: bool = False) -> dict:
        """Append what arrived for `target` since the last write and return its columns
        that change (also set on `target`); `final`: the output has ended."""
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

    def flush(self, targets: dict[int, CoordinationTarget]) -> None:
        with transaction.atomic():
            for target_pk in list(self.pending):
                target = targets[target_pk]
                CoordinationTarget.objects.filter(pk=target_pk).update(**self.fields_for(target))
