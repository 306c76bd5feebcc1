"""environments/http_answers: the answer of a machine read as strict JSON, uncompressed."""

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from environments import http_answers
from environments.connectors.http import RUN_RESULT_BYTES, is_duplicate_answer, parse_finished_run
from environments.http_answers import Answer

FINISHED = {"success": True, "exit_code": 0, "output": "aicore up\n" * 50}


@pytest.fixture
def gzip_server():
    """A loopback agent that answers a finished run gzip-compressed whenever the request
    offers gzip (as requests does by default), and records the request headers."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(dict(self.headers))
            body = json.dumps(FINISHED).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if "gzip" in self.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/deploy/init", seen
    server.shutdown()
    server.server_close()


def test_a_finished_run_from_a_server_that_compresses_when_offered_is_read(gzip_server):
    url, seen = gzip_server

    answer = http_answers.request(
        "POST", url, timeout=5, limit=RUN_RESULT_BYTES, data=b"{}", headers={"Authorization": "Bearer t"}
    )
    result, output = parse_finished_run(answer, url)

    assert answer.status_code == 200
    assert output == FINISHED["output"]
    assert result.exit_code == 0
    (headers,) = seen
    assert headers["Accept-Encoding"] == "identity"
    assert headers["Authorization"] == "Bearer t"  # the caller's headers still go


def test_an_answer_with_a_key_twice_is_not_json():
    answer = Answer(409, b'{"duplicate":false,"duplicate":true}', complete=True)

    with pytest.raises(ValueError, match="duplicate key 'duplicate'"):
        answer.json()
    assert is_duplicate_answer(answer) is False  # busy, not "the first attempt got through"


@pytest.mark.parametrize(
    "body", [b"[" * 100000 + b"]" * 100000, b'{"success": true, "exit_code": NaN}', b'{"exit_code": 1e400}']
)
def test_deep_nan_or_infinite_answers_are_not_json(body):
    with pytest.raises(ValueError):
        Answer(200, body, complete=True).json()


def test_an_answer_cut_short_is_not_json():
    with pytest.raises(ValueError, match="cut short"):
        Answer(200, b'{"success": true}', complete=False).json()
