from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The control room: every model admin, the admin's own views, the dashboard, badges,
    template tags, templates and the pages' script. The top layer: nothing imports it."""

    name = "console"
    verbose_name = "Console"
