from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Who may do what: the roles, the API's permission, the admin's role mixins and API
    tokens. The bottom layer: it imports no other app of the project."""

    name = "accounts"
    verbose_name = "Accounts"
