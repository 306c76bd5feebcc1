"""The API's permission: the roles (accounts.roles) decide, Django's per-model
permissions play no part."""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.roles import ADMIN, VIEWER, user_roles


class HasRole(BasePermission):
    """Reads need VIEWER (or ADMIN), writes need ADMIN. Anonymous requests fail before
    this with 401 (DRF answers NotAuthenticated when no authenticator succeeded)."""

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        roles = user_roles(request.user)
        if request.method in SAFE_METHODS:
            self.message = "Your account has no API role: reading needs VIEWER or ADMIN."
            return VIEWER in roles
        self.message = "This needs the ADMIN role." + (" Your account may only read." if roles else "")
        return ADMIN in roles
