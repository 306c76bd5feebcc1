"""For the tests that kill a worker with SIGKILL: wait until its leases have run out, so the
next worker's start-up reaper (django-q2's post_spawn) takes over at once, instead of the
scheduled reaper up to a minute later. What a dead worker leaves is the same either way."""

from django.utils import timezone

from deployments.models import RunLease
from tests.support.processes import wait_until


def wait_for_leases_to_expire(timeout: float = 30) -> None:
    wait_until(
        lambda: not RunLease.objects.filter(expires_at__gt=timezone.now()).exists(),
        timeout,
        "the killed worker's leases to expire",
    )
