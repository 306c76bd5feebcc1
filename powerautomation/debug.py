"""What Django's debug pages (DJANGO_DEBUG=true) and error reports may show.

Django hides settings whose names look secret (KEY, TOKEN, PASS, ...). Here also: any
value that is a URL with credentials in it (`redis://:password@host`, wherever it sits:
REDIS_URL, CACHES, Q_CLUSTER, request.META), and the notification webhook's URL, whose
path is often the credential itself (chat webhooks)."""

import re

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@host, scheme://:password@host, scheme://token@host, or ...?password=
URL_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://([^/?#\s@]*@|[^\s]*[?&]password=)", re.IGNORECASE)


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|WEBHOOK|DATABASE_URL|REDIS_URL", flags=re.IGNORECASE
    )

    def cleanse_setting(self, key, value):
        if isinstance(value, str) and URL_WITH_CREDENTIALS.search(value):
            return self.cleansed_substitute
        return super().cleanse_setting(key, value)
