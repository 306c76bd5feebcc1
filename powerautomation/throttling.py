"""Request limits: one budget per API token (each token of a user counts on its own), one
per user for browser sessions, one per client address for anonymous requests.

The counts live in Django's default cache, which settings make shared between processes
(the database, or Redis when REDIS_URL is set). Over the limit: 429 with Retry-After.
"""

from knox.models import AuthToken
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle


class _RateFromSettings:
    """Read the rate on each request, not once at import, so a changed setting applies."""

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class TokenRateThrottle(_RateFromSettings, SimpleRateThrottle):
    scope = "token"

    def get_cache_key(self, request, view):
        if not request.user or not request.user.is_authenticated:
            return None  # AnonymousRateThrottle's
        token = request.auth if isinstance(request.auth, AuthToken) else None
        ident = f"token-{token.digest}" if token is not None else f"user-{request.user.pk}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AnonymousRateThrottle(_RateFromSettings, AnonRateThrottle):
    scope = "anon"
