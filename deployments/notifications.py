"""When a coordination ends, or its rollout awaits approval after the first wave, POST a
summary to the notification webhook.

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
from django.db.models import Q

from deployments.api.serializers import CoordinationSummarySerializer
from deployments.models import Coordination, CoordinationStatus as C, Stage, StageEvent, TargetStatus as T
from deployments.notification_policy import notification_url, retry_delay
from deployments.selectors import coordinations_listed
from deployments.transitions import note
from environments import http_answers
from environments.connectors.http import RESPONSE_EXCERPT, excerpt, json_body
from environments.connectors.webhook import sign

logger = logging.getLogger(__name__)

# Failed environments listed in the text (all of them are in the structured part).
TEXT_LIST_LIMIT = 10
ERROR_CHARS = 500
_ICONS = {C.COMPLETED: "✅", C.FAILED: "❌", C.CANCELLED: "🛑", C.AWAITING_APPROVAL: "✋"}
# What each kind of notification is about: its `type`, and the status it needs (a rollout
# approved before its notification went out is not announced as awaiting approval).
ENDED, AWAITING_APPROVAL = "ended", "awaiting_approval"
KINDS = {ENDED: "coordination.ended", AWAITING_APPROVAL: "coordination.awaiting_approval"}


def _where(url: str) -> str:
    """Scheme and host only: webhook URLs often carry their credentials in the path."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def summary(coordination: Coordination, kind: str = ENDED) -> dict:
    """The notification's body: Slack's `text`, plus the coordination as the API's summary
    shows it (`data`) with the error of each environment that did not succeed."""
    listed = coordinations_listed(Coordination.objects.filter(pk=coordination.pk)).get()
    unsuccessful = [
        {
            "environment_id": target.environment_id,
            "status": target.status,
            "reason": target.reason or target.status,
            "error": target.error[:ERROR_CHARS],
        }
        for target in coordination.targets.exclude(status=T.SUCCEEDED).order_by("environment_id")
    ]
    data = {
        **CoordinationSummarySerializer(listed).data,
        "error": coordination.error[:ERROR_CHARS],
        "failed_environments": unsuccessful,
    }
    text = (
        _text(coordination, data["progress"], unsuccessful, data["duration_seconds"])
        if kind == ENDED
        else _awaiting_text(coordination, data["progress"], unsuccessful)
    )
    return {
        "text": text,
        "type": KINDS[kind],
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "data": data,
    }


def _text(coordination: Coordination, progress: dict, unsuccessful: list[dict], duration: float | None) -> str:
    version = f" ({coordination.version})" if coordination.version else ""
    took = f" in {round(duration, 2):g} s" if duration is not None else ""
    text = (
        f"{_ICONS.get(coordination.status, '•')} Deployment {coordination.coordination_id}{version} "
        f"{coordination.status}{took}: {progress['succeeded']} of {progress['total']} environments succeeded"
    )
    if unsuccessful:
        listed = ", ".join(f"{item['environment_id']} ({item['reason']})" for item in unsuccessful[:TEXT_LIST_LIMIT])
        more = len(unsuccessful) - TEXT_LIST_LIMIT
        text += f"; not succeeded: {listed}" + (f" and {more} more" if more > 0 else "")
    if coordination.error and coordination.status != C.COMPLETED:
        text += f". {coordination.error[:ERROR_CHARS]}"
    return text


def _awaiting_text(coordination: Coordination, progress: dict, unsuccessful: list[dict]) -> str:
    version = f" ({coordination.version})" if coordination.version else ""
    text = (
        f"✋ Deployment {coordination.coordination_id}{version} awaits approval: the first wave ended, "
        f"{progress['succeeded']} of {progress['total']} environments succeeded, {progress['pending']} wait"
    )
    if unsuccessful:
        failed = [item for item in unsuccessful if item["status"] != T.PENDING]
        listed = ", ".join(f"{item['environment_id']} ({item['reason']})" for item in failed[:TEXT_LIST_LIMIT])
        if listed:
            text += f"; not succeeded: {listed}"
    return text


def delivery_id(coordination: Coordination, kind: str = ENDED) -> str:
    """The same on every attempt (and on a second run of the task): receivers deduplicate."""
    digest = hashlib.sha256(f"{coordination.coordination_id}:{kind}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _post(url: str, body: bytes, webhook_id: str) -> http_answers.Answer:
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
    return http_answers.request(
        "POST",
        url,
        data=body,
        headers=headers,
        timeout=(timeout, timeout),
        allow_redirects=False,
        verify=settings.HTTP_CA_BUNDLE or True,
    )


def coordination_notify(*, coordination_pk: int, kind: str = ENDED) -> str:
    """Send a coordination's notification of `kind` (the task's body). Safe to run twice:
    a notification already delivered is not sent again.

    1. POST the summary; 2xx is delivered.
    2. Connection errors, timeouts, 408, 429 and 5xx are retried NOTIFICATION_RETRIES times
       with exponential backoff and jitter; other answers are final.
    3. Record the outcome as a note; the coordination's status never changes here.
    """
    coordination = Coordination.objects.filter(pk=coordination_pk).first()
    if kind not in KINDS or coordination is None:
        return "nothing to notify"
    if not (coordination.is_terminal if kind == ENDED else coordination.status == C.AWAITING_APPROVAL):
        return "nothing to notify"
    # Notes written before kinds existed were all about the end.
    of_kind = Q(data__kind=kind) | ~Q(data__has_key="kind") if kind == ENDED else Q(data__kind=kind)
    delivered = StageEvent.objects.filter(of_kind, coordination=coordination, stage=Stage.NOTIFY, data__delivered=True)
    if delivered.exists():
        return "already notified"
    url = notification_url()
    if not url:
        return "notifications are off"
    where = _where(url)
    body = json_body(summary(coordination, kind))
    webhook_id = delivery_id(coordination, kind)
    attempts = settings.NOTIFICATION_RETRIES + 1
    problem = answered = ""
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
                    data={"delivered": True, "attempts": attempt, "status_code": response.status_code, "kind": kind},
                )
                return message
            status = response.status_code
            # The receiver's answer could hold anything: kept where only ADMINs read it.
            problem = f"HTTP {status} (response body: ADMINs only)"
            answered = excerpt(response.text, url, settings.NOTIFICATION_WEBHOOK_SECRET)
            retryable = status >= 500 or status in (408, 429)
        if not retryable or attempt == attempts:
            break
        delay = retry_delay(attempt) * random.uniform(0.8, 1.2)
        logger.info("notification for %s: attempt %s failed (%s); retrying in %.1f s", where, attempt, problem, delay)
        time.sleep(delay)
    message = f"notification to {where} failed after {attempt} attempt{'s' if attempt > 1 else ''}: {problem}"
    logger.warning(
        "coordination %s: %s",
        coordination.coordination_id,
        message,
        extra={"coordination_id": coordination.coordination_id},
    )
    data = {
        "delivered": False,
        "attempts": attempt,
        "kind": kind,
        **({RESPONSE_EXCERPT: answered} if answered else {}),
    }
    note(coordination, message, stage=Stage.NOTIFY, data=data)
    return message
