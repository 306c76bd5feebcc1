"""The admin app without importing every app's admin module at start-up.

Django's default AdminConfig imports each app's `admin` module in `django.setup()`; here
that pulls in the whole console (its views, the REST API, drf-spectacular): about 0.2 s of
every `manage.py` command, `trigger_local` included, that serves no page. The URLconf
discovers them instead (powerautomation/urls.py), the first time a URL is resolved, and
the admin's system checks discover them before checking, so `manage.py check`, `migrate`
and `qcluster` still check every ModelAdmin."""

from django.contrib.admin import autodiscover
from django.contrib.admin.apps import SimpleAdminConfig
from django.contrib.admin.checks import check_admin_app, check_dependencies
from django.core import checks


def check_discovered_admin(app_configs, **kwargs) -> list[checks.CheckMessage]:
    autodiscover()  # once: each admin module is imported once
    return check_admin_app(app_configs, **kwargs)


class AdminConfig(SimpleAdminConfig):
    def ready(self) -> None:
        checks.register(check_dependencies, checks.Tags.admin)
        checks.register(check_discovered_admin, checks.Tags.admin)
