"""Script output as it arrives: kept in memory between batches, written with the batch it
arrived in (so a crash loses none of it), the last DEPLOYMENT_OUTPUT_TAIL_BYTES kept."""


from deployments.models import CoordinationTarget
from deployments.output_tail import keep_tail


class OutputBook:
    def __init__(self) -> None:
        self.pending: dict[int, list[str]] = {}

    def add(self, target_pk: int, text: str) -> None:
        self.pending.setdefault(target_pk, []).append(text)

    def fields_for(self, target: CoordinationTarget) -> dict:
        """The columns that record what arrived for `target` since the last write (and
        the target updated in memory); nothing when nothing arrived."""
        chunks = self.pending.pop(target.pk, None)
        if not chunks:
            return {}
        received = "".join(chunks)
        tail = keep_tail(target.output_tail, received)
        target.output_tail = tail
        target.output_bytes += len(received.encode("utf-8"))
        return {"output_tail": tail, "output_bytes": target.output_bytes}

    def flush(self, targets: dict[int, CoordinationTarget]) -> None:
        for target_pk in list(self.pending):
            target = targets[target_pk]
            CoordinationTarget.objects.filter(pk=target_pk).update(**self.fields_for(target))
