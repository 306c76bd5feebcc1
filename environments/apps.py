from django.apps import AppConfig
from django.core.management import call_command
from django.db.models.signals import post_migrate


def ensure_cache_table(sender, using="default", **kwargs) -> None:
    """The database cache's table, after every `migrate`, so `migrate` alone is enough to
    serve the API (throttling counts and django-q2's cluster stats live in the cache), also
    on a database first migrated while CACHES pointed at Redis. A no-op with Redis, and when
    the table exists."""
    call_command("createcachetable", database=using, verbosity=0)


def ensure_health_schedule(sender, **kwargs) -> None:
    """Keep the health-check schedule in step with its interval (the config file's
    default_settings.health_check_interval, else HEALTH_CHECK_INTERVAL_MINUTES); runs after
    every `migrate` (which `make run` does on each start). An import applies it too."""
    # Models load only once the app registry is ready (Django's rule for apps.py, not a circle).
    from environments.services import health_schedule_sync

    health_schedule_sync()


class EnvironmentsConfig(AppConfig):
    name = "environments"
    verbose_name = "Environments"

    def ready(self) -> None:
        post_migrate.connect(ensure_cache_table, sender=self)
        post_migrate.connect(ensure_health_schedule, sender=self)
