"""Who may read GET /metrics: a scraper with the METRICS_TOKEN (Bearer), or any client whose
address is in METRICS_ALLOWED_NETWORKS (default: loopback only).

The client address is the connection's (REMOTE_ADDR), or with API_NUM_PROXIES set (the
trusted proxies the API's throttling counts) the address the last of them wrote into
X-Forwarded-For, as DRF's `get_ident` reads it then. Unlike `get_ident` with no proxies set,
X-Forwarded-For is never read without API_NUM_PROXIES: any client can write it. Behind a
proxy on the same machine the connection's address is loopback for every client, so
API_NUM_PROXIES must be set there (or METRICS_ALLOWED_NETWORKS=none and the token).
"""

import hmac
import ipaddress
import logging
from enum import Enum

from django.conf import settings
from django.http import HttpRequest
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)


class Access(Enum):
    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"  # no token given, and the address is not let in: 401
    REFUSED = "refused"  # a wrong token: 403


def client_address(request: HttpRequest) -> str:
    if not api_settings.NUM_PROXIES:
        return request.META.get("REMOTE_ADDR", "")
    return BaseThrottle().get_ident(request)


def _address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d
    return any(ip in ipaddress.ip_network(network) for network in settings.METRICS_ALLOWED_NETWORKS)


def _bearer_token(request: HttpRequest) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None without one."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def metrics_access(request: HttpRequest) -> Access:
    token = _bearer_token(request)
    expected = settings.METRICS_TOKEN
    if token is not None and expected:
        if hmac.compare_digest(token.encode("utf-8", "replace"), expected.encode()):
            return Access.ALLOWED
        logger.warning("metrics: a wrong token from %s", client_address(request))
        return Access.REFUSED
    if _address_allowed(client_address(request)):
        return Access.ALLOWED
    return Access.REFUSED if token is not None else Access.UNAUTHENTICATED
