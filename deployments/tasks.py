"""django-q2 tasks: take ids, load rows, call one service."""

from deployments.services import coordination_run


def run_coordination(coordination_pk: int) -> None:
    coordination_run(coordination_pk=coordination_pk)
