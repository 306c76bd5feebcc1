"""Callback tokens: how an http_api or webhook agent reports its run's end. The runner
issues one per claimed target, and polls for those that came back."""

import secrets
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from deployments.models import CallbackToken, CoordinationTarget
from environments import bounds

# Methods whose agent reports the run's end by calling back.
CALLBACK_METHODS = frozenset({"http_api", "webhook"})
CALLBACK_POLL_SECONDS = 0.5


class Callbacks:
    def __init__(self) -> None:
        self.urls: dict[int, str] = {}
        self.awaiting: set[int] = set()
        self.last_poll = time.monotonic()

    def issue(self, target: CoordinationTarget, *, timeout: int) -> None:
        """A single-use, unguessable token bound to this target, expiring with its
        timeout (clamped: a stored value beyond the bound cannot overflow the date); stored
        only as a hash. None without PLATFORM_BASE_URL (no callbacks)."""
        if not settings.PLATFORM_BASE_URL:
            return
        token = secrets.token_urlsafe(32)
        CallbackToken.objects.update_or_create(
            target=target,
            defaults={
                "token_hash": CallbackToken.hash_of(token),
                "expires_at": timezone.now() + timedelta(seconds=bounds.TIMEOUT.clamp(timeout)),
                "used_at": None,
                "result": None,
            },
        )
        self.urls[target.pk] = f"{settings.PLATFORM_BASE_URL}/api/deployment/callback/{token}/"

    def url_for(self, target_pk: int) -> str:
        return self.urls.pop(target_pk, "")

    def collect(self, reporters: dict) -> None:
        """Hand the results that came back to the threads waiting for them (at most every
        CALLBACK_POLL_SECONDS, one query)."""
        now = time.monotonic()
        if not self.awaiting or now - self.last_poll < CALLBACK_POLL_SECONDS:
            return
        self.last_poll = now
        answered = CallbackToken.objects.filter(target_id__in=self.awaiting, used_at__isnull=False).values_list(
            "target_id", "result"
        )
        for target_pk, result in answered:
            self.awaiting.discard(target_pk)
            reporters[target_pk].hand_over_callback(result)
