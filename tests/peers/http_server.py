"""A recording HTTP/1.1 server on 127.0.0.1 for provider tests: scripted answers, requests kept.

Runs in a daemon thread (stdlib ThreadingHTTPServer), so tests may drive async clients against it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    """What the server answers: status, headers, body, and an optional delay before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay_s: float = 0.0


Responder = Callable[[Recorded], Reply]


class HttpPeer:
    """`with HttpPeer() as peer:` → peer.url, peer.requests, peer.replies (a FIFO script)."""

    def __init__(self, responder: Responder | None = None, host: str = "127.0.0.1") -> None:
        self.requests: list[Recorded] = []
        self.replies: list[Reply] = []
        self.default = Reply()
        self._responder = responder
        self._lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                rec = Recorded(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )  # fmt: skip
                reply = peer._reply(rec)
                time.sleep(min(reply.delay_s, 30.0))
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, format: str, *args: object) -> None:
                return None

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            request_queue_size = 128  # the default 5 resets bursts of concurrent connects

        self._server = Server((host, 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    def _reply(self, rec: Recorded) -> Reply:
        with self._lock:
            self.requests.append(rec)
            if self.replies:
                return self.replies.pop(0)
        return self._responder(rec) if self._responder else self.default

    def __enter__(self) -> HttpPeer:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
