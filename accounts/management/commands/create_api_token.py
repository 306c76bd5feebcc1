import argparse
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from knox.models import AuthToken

from accounts.roles import ROLES, user_roles

EXIT_BAD_INPUT = 2
# As API_TOKEN_TTL_DAYS: a longer expiry overflows a date, and no token should live longer.
MAX_DAYS = 3650


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of days, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (no expiry) or more")
    if value > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DAYS} days (10 years)")
    return value


class Command(BaseCommand):
    help = (
        "Create an API token for a user and print its key (shown only this once; only a hash is kept). "
        "Use it as the header 'Authorization: Token <key>'. Revoke it by deleting it in the admin (Auth tokens)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", help="An existing user.")
        parser.add_argument(
            "--expires-in",
            type=_days,
            metavar="DAYS",
            help=f"Days until the token expires, 0: never (default API_TOKEN_TTL_DAYS: {settings.API_TOKEN_TTL_DAYS}).",
        )
        parser.add_argument("--role", choices=ROLES, help="Also put the user in this role's group.")

    def handle(self, *args, username: str, expires_in: int | None, role: str | None, **options):
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(
                f"username: no user {username!r} (create one with createsuperuser or in the admin)",
                returncode=EXIT_BAD_INPUT,
            )
        if not user.is_active:
            raise CommandError(
                f"username: {username!r} is inactive; its tokens would be refused", returncode=EXIT_BAD_INPUT
            )
        if role:
            group, _ = Group.objects.get_or_create(name=role)
            user.groups.add(group)
        days = settings.API_TOKEN_TTL_DAYS if expires_in is None else expires_in
        token, key = AuthToken.objects.create(user=user, expiry=timedelta(days=days) if days else None)
        self.stdout.write(key)
        expiry = token.expiry.isoformat(timespec="seconds") if token.expiry else "never"
        roles = (
            ", ".join(sorted(user_roles(user))) or "none: the API will refuse it until the user gets ADMIN or VIEWER"
        )
        self.stderr.write(f"token for {username}: expires {expiry}; roles {roles}. The key is not shown again.")
