"""The database cache's table, so `migrate` alone is enough to serve the API (throttling
counts and django-q2's cluster stats live in the cache). A no-op when CACHES has no
DatabaseCache (Redis), and when the table exists (`createcachetable` skips it)."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("environments", "0003_host_key_approval")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop, elidable=True)]
