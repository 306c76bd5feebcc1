"""The API's two roles as Django groups: ADMIN (manage environments, trigger, cancel,
retry) and VIEWER (read only). Superusers count as ADMIN without being in the group."""

from django.db import migrations

ROLES = ("ADMIN", "VIEWER")


def create_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLES:
        Group.objects.get_or_create(name=name)


def remove_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("deployments", "0003_api_retry_idempotency"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
