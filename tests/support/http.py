"""Loopback HTTP for the connector and notification tests: a server with scripted answers
that records every request, and a port that accepts connections and never answers."""

import json
import socket
import ssl
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


def serve(
    handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
) -> tuple[ThreadingHTTPServer, int, threading.Thread]:
    """Serve `handler` on a free loopback port in a daemon thread (over TLS with a server
    context `tls`): (server, port, thread)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, server.server_address[1], thread


class HTTPServer:
    """A loopback HTTP server with scripted answers, recording every request.

    `answer(path, *answers)` queues answers for a path; the last one repeats. A bare int
    is a status code. Unknown paths get 404. `tls`: a server context, to serve HTTPS."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.scheme = "https" if tls is not None else "http"
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

        self.server, self.port, self.thread = serve(Handler, tls)

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
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def silent_server() -> tuple[socket.socket, int]:
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock, sock.getsockname()[1]


class HugeBodyServer:
    """A loopback server answering every request with `status` and a body far larger than
    any cap: `size` bytes generated as they are sent (Content-Length), or, with size=None, an
    endless chunked body. `sent` counts the body bytes the client let it send."""

    def __init__(self, status: int = 200, size: int | None = 50 * 1024 * 1024):
        self.sent = 0
        self.requests = 0
        self.lock = threading.Lock()
        self.closed = threading.Event()  # ends the bodies still being sent
        owner = self
        block = b"x" * 65536

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with owner.lock:
                    owner.requests += 1
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                if size is None:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(size))
                self.end_headers()
                remaining = size
                try:
                    while (remaining is None or remaining > 0) and not owner.closed.is_set():
                        chunk = block if remaining is None else block[:remaining]
                        frame = b"%x\r\n%s\r\n" % (len(chunk), chunk) if size is None else chunk
                        self.wfile.write(frame)
                        with owner.lock:
                            owner.sent += len(chunk)
                        if remaining is not None:
                            remaining -= len(chunk)
                except OSError:
                    pass  # the client hung up: what a capped reader does
                self.close_connection = True

            do_GET = do_POST = _handle  # noqa: N815 (http.server's names)

            def log_message(self, *args):
                pass

        self.server, self.port, self.thread = serve(Handler)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()


def finishes(function, *, within: float = 30.0):
    """Run `function()` in a thread; its result, or AssertionError when it is still running
    after `within` seconds (an endless body would otherwise hang the test itself)."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    if thread.is_alive():
        raise AssertionError(f"still reading after {within} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
