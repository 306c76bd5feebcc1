"""The admin follows the API's roles (accounts/roles.py): VIEWER sees every
environment, coordination and event and changes nothing; ADMIN (or a superuser) also adds,
changes, deletes and operates (deploy, check, cancel, retry, import, approve host keys).
Users need `is_staff` to sign in to the admin at all; a staff user with neither role sees
none of these models. Django's per-model permissions play no part here."""

from functools import partial

from django.contrib import admin
from django.core.exceptions import PermissionDenied

from accounts.roles import ADMIN, VIEWER, user_roles


def can_view(request) -> bool:
    return VIEWER in user_roles(request.user)


def can_operate(request) -> bool:
    return ADMIN in user_roles(request.user)


def require_operator(request) -> None:
    if not can_operate(request):
        raise PermissionDenied("This needs the ADMIN role.")


def require_viewer(request) -> None:
    if not can_view(request):
        raise PermissionDenied("This needs the VIEWER or ADMIN role.")


class RoleAdmin(admin.ModelAdmin):
    """Permissions keyed on the role. Actions declare `allowed_permissions=("operate",)`,
    so a VIEWER gets none (and no action bar)."""

    def has_module_permission(self, request) -> bool:
        return can_view(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return can_view(request)

    def has_add_permission(self, request) -> bool:
        return can_operate(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return can_operate(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return can_operate(request)

    def has_operate_permission(self, request) -> bool:
        return can_operate(request)

    def admin_view_of(self, view):
        """A view function `view(request, *, model_admin, ...)` as one of this admin's
        pages: signed-in staff only (the view checks the role itself)."""
        return self.admin_site.admin_view(partial(view, model_admin=self))


class RecordAdmin(RoleAdmin):
    """A record of what happened (coordinations, events): read-only for everyone; ADMIN
    may still operate on it through actions that call services."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
