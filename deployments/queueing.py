"""The one place deployments queue work for django-q2 workers.

It sits low (models, settings and the notification policy below it) so that the
transitions, the leases and the runner can queue a coordination, a shard or a
notification without importing upward. Each function queues at once; callers inside a
transaction wrap it in `transaction.on_commit`, so a worker never sees a row that is not
committed yet. The task bodies live in `deployments.tasks`.
"""

import logging

from django.conf import settings
from django_q.tasks import async_task

from deployments.notification_policy import notification_task_timeout, notification_url

logger = logging.getLogger(__name__)

COORDINATION_GROUP = "coordinations"


def queue_coordination(*, coordination_pk: int, coordination_id: str) -> None:
    """The lead task of a coordination (a second one for the same coordination finds the
    lead taken and returns)."""
    async_task(
        "deployments.tasks.run_coordination",
        coordination_pk,
        q_options={
            "task_name": f"coordination {coordination_id}",
            "group": COORDINATION_GROUP,
            "timeout": settings.Q_TIMEOUT,
        },
    )


def queue_shard(*, coordination_pk: int, coordination_id: str) -> None:
    """One more task to share a coordination's deliveries (another worker or cluster)."""
    async_task(
        "deployments.tasks.run_coordination_shard",
        coordination_pk,
        q_options={
            "task_name": f"coordination {coordination_id} (shard)",
            "group": COORDINATION_GROUP,
            "timeout": settings.Q_TIMEOUT,
        },
    )


def queue_notification(*, coordination_pk: int, kind: str = "ended") -> None:
    """A coordination's notification (`ended`, or `awaiting_approval`), when notifications
    are on. Never raises: a broker or database hiccup here must not reach the coordinator
    (logged)."""
    try:
        if not notification_url():
            return
        # The end's task keeps its old arguments (tasks queued before kinds existed).
        arguments = (coordination_pk,) if kind == "ended" else (coordination_pk, kind)
        async_task(
            "deployments.tasks.notify_coordination_end",
            *arguments,
            q_options={
                "task_name": f"notify {kind.replace('_', ' ')} of coordination {coordination_pk}",
                "timeout": notification_task_timeout(),
            },
        )
    except Exception:
        logger.exception("could not queue the notification for coordination %s", coordination_pk)


def queue_reaper() -> None:
    """The reaper, now (a worker that starts adopts what dead ones left at once)."""
    async_task("deployments.tasks.reap_coordinations", q_options={"task_name": "reap on worker start"})
