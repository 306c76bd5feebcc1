"""The two roles, as Django groups (created by migration deployments.0004): the API
(accounts.permissions) and the admin (accounts.admin_roles) both follow them.

ADMIN manages environments and triggers, cancels and retries coordinations; VIEWER reads.
A superuser counts as ADMIN. A signed-in user with neither role may read nothing.
"""

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


def is_admin(user) -> bool:
    """May `user` see what only ADMINs see (a response body an agent answered, EC2
    user_data, a notification webhook's URL)? Everyone else, and a command or a
    notification with no user, gets them masked."""
    return ADMIN in user_roles(user)
