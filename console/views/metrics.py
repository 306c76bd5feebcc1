"""GET /metrics: the platform's figures in Prometheus' text format (or OpenMetrics when the
scraper asks for it), for a scraper console/metrics_access.py lets in."""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client.exposition import choose_encoder

from console.metrics import registry
from console.metrics_access import Access, metrics_access


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    access = metrics_access(request)
    if access is Access.UNAUTHENTICATED:
        response = HttpResponse("metrics: give the METRICS_TOKEN as a Bearer token\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    elif access is Access.REFUSED:
        response = HttpResponse("metrics: not allowed\n", status=403)
    else:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = HttpResponse(encoder(registry), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
