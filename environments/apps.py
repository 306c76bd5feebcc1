from datetime import timedelta

from django.apps import AppConfig
from django.conf import settings
from django.core.management import call_command
from django.db.models.signals import post_migrate
from django.utils import timezone

HEALTH_SCHEDULE_NAME = "environment health checks"


def ensure_cache_table(sender, using="default", **kwargs) -> None:
    """The database cache's table, after every `migrate`, so `migrate` alone is enough to
    serve the API (throttling counts and django-q2's cluster stats live in the cache), also
    on a database first migrated while CACHES pointed at Redis. A no-op with Redis, and when
    the table exists."""
    call_command("createcachetable", database=using, verbosity=0)


def ensure_health_schedule(sender, **kwargs) -> None:
    """Keep the health-check schedule in step with HEALTH_CHECK_INTERVAL_MINUTES; runs
    after every `migrate` (which `make run` does on each start)."""
    # Models load only once the app registry is ready (Django's rule for apps.py, not a circle).
    from django_q.models import Schedule

    minutes = settings.HEALTH_CHECK_INTERVAL_MINUTES
    schedule, created = Schedule.objects.get_or_create(
        name=HEALTH_SCHEDULE_NAME,
        defaults={
            "func": "environments.tasks.check_environments_health",
            "schedule_type": Schedule.MINUTES,
            "minutes": minutes,
            "repeats": -1,
            "next_run": timezone.now() + timedelta(minutes=minutes),
        },
    )
    if not created and schedule.minutes != minutes:
        schedule.minutes = minutes
        schedule.save(update_fields=["minutes"])


class EnvironmentsConfig(AppConfig):
    name = "environments"
    verbose_name = "Environments"

    def ready(self) -> None:
        post_migrate.connect(ensure_cache_table, sender=self)
        post_migrate.connect(ensure_health_schedule, sender=self)
