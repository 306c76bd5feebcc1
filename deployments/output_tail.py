"""The part of a script's output a target keeps: shared by the worker's delivery threads
(deployments.runner.output) and polling agents' reports (deployments.agent_runs)."""

from django.conf import settings


def keep_tail(tail: str, received: str) -> str:
    """The output kept after `received` arrives: the last DEPLOYMENT_OUTPUT_TAIL_BYTES."""
    limit = settings.DEPLOYMENT_OUTPUT_TAIL_BYTES
    return (tail + received).encode("utf-8")[-limit:].decode("utf-8", errors="ignore")
