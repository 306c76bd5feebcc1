"""Whether and where the end of a coordination is announced: read by the queue (to skip
queueing when notifications are off) and by the sender."""

from django.conf import settings

from environments.config import stored_blocks

# Backoff between attempts doubles from NOTIFICATION_RETRY_DELAY_SECONDS up to this.
MAX_RETRY_DELAY_SECONDS = 60


def notification_url() -> str:
    """The config file's notification_settings.notification_webhook, else the setting
    NOTIFICATION_WEBHOOK_URL; nothing when the file says enable_notifications: false."""
    block = stored_blocks().get("notification_settings") or {}
    if block.get("enable_notifications") is False:
        return ""
    return block.get("notification_webhook") or settings.NOTIFICATION_WEBHOOK_URL


def retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...), before jitter."""
    return min(settings.NOTIFICATION_RETRY_DELAY_SECONDS * 2 ** (attempt - 1), MAX_RETRY_DELAY_SECONDS)


def notification_task_timeout() -> int:
    """The worst case of every attempt timing out plus every backoff, bounded by Q_TIMEOUT."""
    attempts = settings.NOTIFICATION_RETRIES + 1
    waits = sum(retry_delay(attempt) for attempt in range(1, attempts))
    worst = attempts * 2 * settings.NOTIFICATION_TIMEOUT_SECONDS + waits * 1.25 + 30
    return int(min(worst, settings.Q_TIMEOUT))
