from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils import timezone

REAPER_SCHEDULE_NAME = "coordination reaper"


def ensure_reaper_schedule(sender, **kwargs) -> None:
    """The reaper runs every minute on whichever cluster is alive (and at worker start)."""
    # Models load only once the app registry is ready (Django's rule for apps.py, not a circle).
    from django_q.models import Schedule

    Schedule.objects.get_or_create(
        name=REAPER_SCHEDULE_NAME,
        defaults={
            "func": "deployments.tasks.reap_coordinations",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
            "next_run": timezone.now(),
        },
    )


def ensure_retention_schedule(sender, **kwargs) -> None:
    """The daily prune follows HISTORY_RETENTION_DAYS after every `migrate`."""
    from deployments.retention import retention_schedule_sync

    retention_schedule_sync()


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        # These modules import models: importable only from ready() on.
        from django_q.signals import post_spawn

        from deployments.leases import reap_on_worker_start
        from deployments.startup import on_worker_start

        post_migrate.connect(ensure_reaper_schedule, sender=self)
        post_migrate.connect(ensure_retention_schedule, sender=self)
        post_spawn.connect(reap_on_worker_start, dispatch_uid="deployments.reap_on_worker_start")
        post_spawn.connect(on_worker_start, dispatch_uid="deployments.auto_deploy_on_worker_start")
