"""Loopback HTTP for the connector and notification tests: a server with scripted answers
that records every request, and a port that accepts connections and never answers."""

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    body: str | bytes = ""
    delay: float = 0.0  # seconds before answering
    headers: dict = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


class HTTPServer:
    """A loopback HTTP server with scripted answers, recording every request.

    `answer(path, *answers)` queues answers for a path; the last one repeats. A bare int
    is a status code. Unknown paths get 404."""

    def __init__(self):
        self.routes: dict[str, list[Answer]] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                answer = owner._next(self.command, self.path, dict(self.headers), body)
                if answer.delay:
                    time.sleep(answer.delay)
                payload = answer.body.encode() if isinstance(answer.body, str) else answer.body
                self.send_response(answer.status)
                for name, value in {"Content-Type": "application/json", **answer.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle  # noqa: N815 (http.server's names)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def answer(self, path: str, *answers) -> None:
        with self.lock:
            self.routes[path] = [a if isinstance(a, Answer) else Answer(status=a) for a in answers]

    def _next(self, method: str, path: str, headers: dict, body: bytes) -> Answer:
        with self.lock:
            self.requests.append(Request(method, path, headers, body))
            queue = self.routes.get(path)
            if not queue:
                return Answer(status=404, body='{"detail": "not found"}')
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def silent_server() -> tuple[socket.socket, int]:
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock, sock.getsockname()[1]
