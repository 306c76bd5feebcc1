"""TLS to agents is verified: a certificate nobody vouches for is refused; naming its CA
in HTTP_CA_BUNDLE (the context's ca_bundle) makes it trusted."""

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from environments.connectors import ConnectorError, DeploymentContext, Target
from environments.connectors.http_api import HTTPAPIConnector
from tests.support.tls import self_signed


@pytest.fixture
def https_agent(tmp_path):
    cert_path, key_path = self_signed(tmp_path)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"success": True, "exit_code": 0, "output": "over tls"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_path, key_path)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1], cert_path
    server.shutdown()
    server.server_close()


class Reporter:
    stop = threading.Event()

    def script_started(self, detail):
        pass

    def output(self, text):
        self.text = text


def target(port) -> Target:
    return Target(
        environment_id="tls_env",
        connection_method="http_api",
        api_endpoint=f"https://127.0.0.1:{port}/api/deploy/init",
        api_token="token",
    )


def test_an_untrusted_certificate_is_refused_and_not_retried(https_agent):
    port, _ = https_agent
    with pytest.raises(ConnectorError) as caught:
        HTTPAPIConnector().run(target(port), DeploymentContext(coordination_id="c", connect_timeout=3), Reporter())
    assert (caught.value.reason, caught.value.permanent) == ("tls_error", True)
    assert "not trusted" in caught.value.message


def test_a_ca_bundle_makes_a_private_certificate_trusted(https_agent):
    port, cert_path = https_agent
    reporter = Reporter()
    context = DeploymentContext(coordination_id="c", connect_timeout=3, ca_bundle=str(cert_path))

    result = HTTPAPIConnector().run(target(port), context, reporter)

    assert result.exit_code == 0
    assert reporter.text == "over tls\n"
