"""One small HTTP server per process: `/metrics`, `/healthz` and `/readyz`.

`ObserveServer(host, port, checks)` binds in `start()` (never in `__init__`) and serves on
a daemon thread, so a wedged stage can't keep the process alive through it, and a slow
scraper can't hold a stage up: every request is answered from state the stages already
keep (a dict of heartbeats, the set of dependencies down, the metric registry).

- `/metrics`: the Prometheus text exposition of `checks.metrics()`.
- `/healthz`: 200 while every stage's loop made progress within the liveness bound, else
  503; the body says which stage stalled and for how long. Liveness only: a stage waiting
  out an outage is alive (it beats while it waits), so the orchestrator doesn't restart a
  process that would only wait again.
- `/readyz`: 200 once every stage runs (partitions assigned or waiting for assignment) with
  the dependencies it needs reachable, else 503 naming what is missing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streams.observe.exceptions import ObserveError

__all__ = ["Checks", "ObserveServer"]

log = logging.getLogger(__name__)

# (ok, detail): detail is the body, one line per problem, "ok" when there is none.
Check = Callable[[], tuple[bool, str]]


@dataclass(frozen=True)
class Checks:
    """What the server answers from; each callable must be quick and never block on I/O."""

    live: Check
    ready: Check
    metrics: Callable[[], bytes]


class ObserveServer:
    """`/metrics`, `/healthz`, `/readyz` on `host:port` (port 0: any free one)."""

    def __init__(self, host: str, port: int, checks: Checks) -> None:
        self._host = host
        self._port = port
        self._checks = checks
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after `start`)."""
        if self._httpd is None:
            raise ObserveError("ObserveServer.port before start(): start it first")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """`http://host:port` of the running server."""
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve on a daemon thread; raises ObserveError if the port is taken."""
        checks = self._checks

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        self._answer(200, checks.metrics(), CONTENT_TYPE_LATEST)
                    elif path in ("/healthz", "/readyz"):
                        ok, detail = (checks.live if path == "/healthz" else checks.ready)()
                        self._answer(200 if ok else 503, f"{detail}\n".encode(), "text/plain")
                    else:
                        body = b"not found: try /metrics, /healthz or /readyz\n"
                        self._answer(404, body, "text/plain")
                except Exception as exc:  # a bug in a check must not kill the server
                    log.error("observe: %s failed", path, exc_info=True)
                    body = f"error: {type(exc).__name__}: {exc}\n".encode()
                    self._answer(500, body, "text/plain")

            def _answer(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds would flood the log

        try:
            httpd = ThreadingHTTPServer((self._host, self._port), Handler)
        except OSError as exc:
            raise ObserveError(
                f"cannot serve /metrics on {self._host}:{self._port}: {exc.strerror}; another "
                "process has the port: set observe.port (TIDINGS_OBSERVE__PORT) to a free "
                "one, 0 for any, or unset it to serve nothing"
            ) from exc
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="observe",
            daemon=True,
        )  # fmt: skip
        self._thread.start()

    def close(self) -> None:
        """Stop serving; blocks up to the poll interval. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
