"""When a coordination ends, POST a summary to the notification webhook.

The body is Slack-compatible (`{"text": ...}`) and carries the same summary as structured
data. With NOTIFICATION_WEBHOOK_SECRET set it is signed as the webhook trigger is (Standard
Webhooks: webhook-id, webhook-timestamp, webhook-signature). It is sent by a django-q2 task
queued after the coordination's last transition commits, retried with backoff, and never
changes the coordination: the outcome is logged and recorded as a note (stage "notify").
"""

import hashlib
import logging
import random
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db.models import Count, Q
from django_q.tasks import async_task

from deployments.models import Coordination, CoordinationStatus as C, Stage, StageEvent, TargetStatus as T
from deployments.transitions import note
from environments.config import stored_blocks
from environments.connectors.http import excerpt, json_body
from environments.connectors.webhook import sign

logger = logging.getLogger(__name__)

# Backoff between attempts doubles from NOTIFICATION_RETRY_DELAY_SECONDS up to this.
MAX_RETRY_DELAY_SECONDS = 60
# Failed environments listed in the text (all of them are in the structured part).
TEXT_LIST_LIMIT = 10
ERROR_CHARS = 500
_ICONS = {C.COMPLETED: "✅", C.FAILED: "❌", C.CANCELLED: "🛑"}


def notification_url() -> str:
    """The config file's notification_settings.notification_webhook, else the setting
    NOTIFICATION_WEBHOOK_URL; nothing when the file says enable_notifications: false."""
    block = stored_blocks().get("notification_settings") or {}
    if block.get("enable_notifications") is False:
        return ""
    return block.get("notification_webhook") or settings.NOTIFICATION_WEBHOOK_URL


def _task_timeout() -> int:
    attempts = settings.NOTIFICATION_RETRIES + 1
    waits = sum(_delay(attempt) for attempt in range(1, attempts))
    worst = attempts * 2 * settings.NOTIFICATION_TIMEOUT_SECONDS + waits * 1.25 + 30
    return int(min(worst, settings.Q_TIMEOUT))


def coordination_ended(*, coordination_pk: int) -> None:
    """Queue the notification of a coordination that has just ended (called on commit)."""
    try:
        if not notification_url():
            return
        async_task(
            "deployments.tasks.notify_coordination_end",
            coordination_pk,
            q_options={"task_name": f"notify end of coordination {coordination_pk}", "timeout": _task_timeout()},
        )
    except Exception:  # the broker or the database hiccuped: the coordination is not affected
        logger.exception("could not queue the notification for coordination %s", coordination_pk)


def _delay(attempt: int) -> float:
    return min(settings.NOTIFICATION_RETRY_DELAY_SECONDS * 2 ** (attempt - 1), MAX_RETRY_DELAY_SECONDS)


def _where(url: str) -> str:
    """Scheme and host only: webhook URLs often carry their credentials in the path."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _isoformat(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def summary(coordination: Coordination) -> dict:
    """The notification's body: Slack's `text` plus the structured summary."""
    counts = coordination.targets.aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=Q(status=T.SUCCEEDED)),
        failed=Count("id", filter=Q(status=T.FAILED)),
        cancelled=Count("id", filter=Q(status=T.CANCELLED)),
        interrupted=Count("id", filter=Q(status=T.INTERRUPTED)),
    )
    unsuccessful = [
        {
            "environment_id": target.environment_id,
            "status": target.status,
            "reason": target.reason or target.status,
            "error": target.error[:ERROR_CHARS],
        }
        for target in coordination.targets.exclude(status=T.SUCCEEDED).order_by("environment_id")
    ]
    end = coordination.finished_at
    duration = round((end - coordination.created_at).total_seconds(), 2) if end else None
    data = {
        "coordination_id": coordination.coordination_id,
        "status": coordination.status,
        "version": coordination.version,
        "triggered_by": coordination.triggered_by,
        "ec2_instance_id": coordination.ec2_instance_id,
        "ec2_public_ip": coordination.ec2_public_ip,
        "created_at": _isoformat(coordination.created_at),
        "started_at": _isoformat(coordination.started_at),
        "finished_at": _isoformat(end),
        "duration_seconds": duration,
        "counts": counts,
        "failed_environments": unsuccessful,
        "error": coordination.error[:ERROR_CHARS],
    }
    return {
        "text": _text(coordination, counts, unsuccessful, duration),
        "type": "coordination.ended",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "data": data,
    }


def _text(coordination: Coordination, counts: dict, unsuccessful: list[dict], duration: float | None) -> str:
    version = f" ({coordination.version})" if coordination.version else ""
    took = f" in {duration:g} s" if duration is not None else ""
    text = (
        f"{_ICONS.get(coordination.status, '•')} Deployment {coordination.coordination_id}{version} "
        f"{coordination.status}{took}: {counts['succeeded']} of {counts['total']} environments succeeded"
    )
    if unsuccessful:
        listed = ", ".join(f"{item['environment_id']} ({item['reason']})" for item in unsuccessful[:TEXT_LIST_LIMIT])
        more = len(unsuccessful) - TEXT_LIST_LIMIT
        text += f"; not succeeded: {listed}" + (f" and {more} more" if more > 0 else "")
    if coordination.error and coordination.status != C.COMPLETED:
        text += f". {coordination.error[:ERROR_CHARS]}"
    return text


def delivery_id(coordination: Coordination) -> str:
    """The same on every attempt (and on a second run of the task): receivers deduplicate."""
    digest = hashlib.sha256(f"{coordination.coordination_id}:ended".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _post(url: str, body: bytes, webhook_id: str) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    secret = settings.NOTIFICATION_WEBHOOK_SECRET
    if secret:
        timestamp = int(time.time())
        headers.update(
            {
                "webhook-id": webhook_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(secret, webhook_id, timestamp, body),
            }
        )
    timeout = settings.NOTIFICATION_TIMEOUT_SECONDS
    return requests.post(
        url,
        data=body,
        headers=headers,
        timeout=(timeout, timeout),
        allow_redirects=False,
        verify=settings.HTTP_CA_BUNDLE or True,
    )


def coordination_notify(*, coordination_pk: int) -> str:
    """Send the end-of-coordination notification (the task's body). Safe to run twice: a
    notification already delivered is not sent again.

    1. POST the summary; 2xx is delivered.
    2. Connection errors, timeouts, 408, 429 and 5xx are retried NOTIFICATION_RETRIES times
       with exponential backoff and jitter; other answers are final.
    3. Record the outcome as a note; the coordination's status never changes here.
    """
    coordination = Coordination.objects.filter(pk=coordination_pk).first()
    if coordination is None or not coordination.is_terminal:
        return "nothing to notify"
    delivered = StageEvent.objects.filter(coordination=coordination, stage=Stage.NOTIFY, data__delivered=True)
    if delivered.exists():
        return "already notified"
    url = notification_url()
    if not url:
        return "notifications are off"
    where = _where(url)
    body = json_body(summary(coordination))
    webhook_id = delivery_id(coordination)
    attempts = settings.NOTIFICATION_RETRIES + 1
    problem = ""
    for attempt in range(1, attempts + 1):
        try:
            response = _post(url, body, webhook_id)
        except requests.RequestException as exc:
            problem, retryable = f"{type(exc).__name__}", True
        else:
            if 200 <= response.status_code < 300:
                message = f"notification delivered to {where} (HTTP {response.status_code}, attempt {attempt})"
                note(
                    coordination,
                    message,
                    stage=Stage.NOTIFY,
                    data={"delivered": True, "attempts": attempt, "status_code": response.status_code},
                )
                return message
            status = response.status_code
            problem = f"HTTP {status}: {excerpt(response.text, url, settings.NOTIFICATION_WEBHOOK_SECRET)}"
            retryable = status >= 500 or status in (408, 429)
        if not retryable or attempt == attempts:
            break
        delay = _delay(attempt) * random.uniform(0.8, 1.2)
        logger.info("notification for %s: attempt %s failed (%s); retrying in %.1f s", where, attempt, problem, delay)
        time.sleep(delay)
    message = f"notification to {where} failed after {attempt} attempt{'s' if attempt > 1 else ''}: {problem}"
    logger.warning("coordination %s: %s", coordination.coordination_id, message)
    note(coordination, message, stage=Stage.NOTIFY, data={"delivered": False, "attempts": attempt})
    return message
