"""Health checks read at most a few KiB of any answer, and never for ever."""

from environments.health import check_health
from tests.support.http import finishes

BOUND = 20 * 1024 * 1024  # well under the 50 MB body, above what loopback socket buffers hold


def test_a_health_url_answering_50_mb_is_healthy_after_a_bounded_read(huge_body_server):
    server = huge_body_server(status=200)

    result = check_health(server.url("/health"), timeout=5, retries=0, retry_delay=0)

    assert result.healthy
    assert server.sent < BOUND


def test_a_health_url_answering_an_endless_body_does_not_hang_the_check(huge_body_server):
    server = huge_body_server(status=503, size=None)

    result = finishes(lambda: check_health(server.url("/health"), timeout=2, retries=1, retry_delay=0))

    assert not result.healthy
    assert "HTTP 503" in result.detail
    assert server.requests == 2
