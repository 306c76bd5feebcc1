from django.apps import AppConfig
from django.core import checks

from powerautomation.checks import debug_is_off


class AccountsConfig(AppConfig):
    """Who may do what: the roles, the API's permission, the admin's role mixins and API
    tokens. The bottom layer: it imports no other app of the project."""

    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        # The project's own checks: the bottom app registers them, whatever else is installed.
        checks.register(debug_is_off, checks.Tags.security)
