"""The API's two roles, as Django groups (created by migration deployments.0004).

ADMIN manages environments and triggers, cancels and retries coordinations; VIEWER reads.
A superuser counts as ADMIN. A signed-in user with neither role may read nothing.
"""

from rest_framework.permissions import SAFE_METHODS, BasePermission

ADMIN = "ADMIN"
VIEWER = "VIEWER"
ROLES = (ADMIN, VIEWER)


def user_roles(user) -> frozenset[str]:
    """The roles `user` holds; ADMIN implies VIEWER. One query, remembered on the user
    object for the rest of the request."""
    if user is None or not user.is_authenticated:
        return frozenset()
    cached = getattr(user, "_api_roles", None)
    if cached is None:
        if user.is_superuser:
            cached = frozenset(ROLES)
        else:
            names = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
            if ADMIN in names:
                names.add(VIEWER)
            cached = frozenset(names)
        user._api_roles = cached
    return cached


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
