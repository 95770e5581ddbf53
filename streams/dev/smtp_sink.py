"""A local SMTP sink for development and tests: every accepted message becomes an .eml file.

Files are named after the message's Message-ID, which tidings derives from the notification
id, so a re-delivery does not overwrite the first copy: it lands next to it as
`<id>.dup-<n>.eml` and bumps the `duplicates` counter, which makes at-least-once effects
visible. Run it standalone with `python -m streams.dev.smtp_sink --port 12525 --dir .local/mail`.

Not re-exported from `processors`: `python -m` would then import this module twice, and
production code has no business pulling in an SMTP server.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import logging
import os
import re
import signal
import socket
import ssl
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

__all__ = ["SinkStats", "SmtpSink", "main", "safe_name"]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
_MAX_NAME = 150


@dataclass(frozen=True, slots=True)
class SinkStats:
    """A consistent snapshot of the sink's counters."""

    received: int  # messages accepted and stored, duplicates included
    duplicates: int  # stored messages whose Message-ID had been stored before
    rejected: int  # DATA answered with `fail_with`
    connections: int  # SMTP sessions greeted with EHLO; shows connection reuse


def safe_name(message_id: str) -> str:
    """File-name stem for a Message-ID: [A-Za-z0-9._@+=-] only, bounded; raises nothing, pure."""
    stem = _UNSAFE.sub("_", message_id.strip().strip("<>")).lstrip(".")
    if len(stem) > _MAX_NAME:
        # Truncated names could collide; the hash keeps distinct ids distinct.
        digest = hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()[:16]
        stem = f"{stem[:_MAX_NAME]}-{digest}"
    return stem


class _PortReportingController(Controller):
    """Controller that accepts port 0 (the OS picks a free port) and reports the real one."""

    def _trigger_server(self) -> None:
        # aiosmtpd pokes the listener to instantiate its protocol, but connects to
        # `self.port` verbatim — with port 0 it must learn the bound port first.
        sockets = getattr(self.server, "sockets", None)
        if self.port == 0 and sockets:
            self.port = sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # untyped in aiosmtpd


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 (own thread) that stores each message as an .eml file."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        port: int = 12525,
        fail_with: tuple[int, str] | None = None,
        fail_rcpt_with: tuple[int, str] | None = None,
        delay_s: float = 0.0,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        """Configure the sink; raises ValueError, ssl.SSLError/OSError on a bad cert; no socket."""
        for name, reply in (("fail_with", fail_with), ("fail_rcpt_with", fail_rcpt_with)):
            if reply is not None and not 400 <= reply[0] <= 599:
                raise ValueError(f"{name} code must be a 4xx or 5xx SMTP code, got {reply[0]}")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if credentials and tls_cert is None:
            # Same stance as aiosmtpd: AUTH without TLS would teach clients to leak passwords.
            raise ValueError(
                "credentials need tls_cert and tls_key: AUTH is offered only after STARTTLS"
            )
        self.directory = Path(directory)
        self.requested_port = port
        # Plain attributes on purpose: tests may flip them while the sink runs.
        self.fail_with = fail_with
        self.fail_rcpt_with = fail_rcpt_with
        self.delay_s = delay_s
        self._credentials = dict(credentials or {})
        self._tls: ssl.SSLContext | None = None
        if tls_cert is not None and tls_key is not None:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(os.fspath(tls_cert), os.fspath(tls_key))
        self._lock = threading.Lock()  # counters are written on the sink's thread
        self._received = self._duplicates = self._rejected = self._connections = 0
        self._abandoned = 0
        self._controller: Any = None

    @property
    def port(self) -> int:
        """The bound port once started (useful with port=0), else the requested one."""
        return int(self._controller.port) if self._controller else self.requested_port

    @property
    def received(self) -> int:
        """Messages accepted and stored, duplicates included."""
        return self.stats().received

    @property
    def duplicates(self) -> int:
        """Stored messages whose Message-ID was already in the directory."""
        return self.stats().duplicates

    @property
    def rejected(self) -> int:
        """Messages refused at DATA because of `fail_with`."""
        return self.stats().rejected

    def stats(self) -> SinkStats:
        """Snapshot all counters at once; raises nothing; thread-safe, takes a short lock."""
        with self._lock:
            return SinkStats(self._received, self._duplicates, self._rejected, self._connections)

    def start(self) -> None:
        """Bind 127.0.0.1:port and serve in a thread; raises OSError if busy; blocks until ready."""
        if self._controller is not None:
            raise RuntimeError("SmtpSink already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.requested_port:
            _check_port_free(self.requested_port)  # before the Controller opens its loop
        kwargs: dict[str, Any] = {}
        if self._tls is not None:
            kwargs |= {"tls_context": self._tls, "require_starttls": True}
        if self._credentials:
            kwargs |= {"authenticator": self._authenticate, "auth_required": True}
        controller = _PortReportingController(
            _Handler(self),
            hostname="127.0.0.1",
            port=self.requested_port,
            # Fixed banner name: aiosmtpd would otherwise call socket.getfqdn() (a DNS wait).
            server_hostname="tidings-sink.local",
            ready_timeout=10.0,
            **kwargs,
        )
        try:
            controller.start()
        except BaseException:
            # A failed start leaves the controller's private event loop open (ResourceWarning).
            if not controller.loop.is_closed():
                controller.stop(no_assert=True)
                controller.loop.close()
            raise
        self._controller = controller
        log.info("SMTP sink on 127.0.0.1:%d storing mail in %s", self.port, self.directory)

    def stop(self) -> None:
        """Stop serving, close every session; idempotent, raises nothing; blocks until joined."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        expected = self._credentials.get(login)
        # Constant-time compare: even a dev sink should not teach timing-leaky habits.
        ok = expected is not None and hmac.compare_digest(
            expected.encode("utf-8"), bytes(data.password)
        )
        # handled=False: aiosmtpd then answers 535 itself (handled=True would send nothing).
        return AuthResult(success=ok, handled=False)

    def _store(self, envelope: Envelope) -> Path:
        content = envelope.original_content or b""
        headers = BytesHeaderParser(policy=policy.default).parsebytes(content)
        message_id = str(headers.get("Message-ID") or "")
        stem = safe_name(message_id) if message_id else ""
        if not stem:
            stem = f"no-message-id-{uuid.uuid4().hex}"
        # Trace headers the way MTAs prepend Received:, so the envelope stays inspectable.
        trace = (
            f"X-MailFrom: {envelope.mail_from}\r\nX-RcptTo: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        tmp = self.directory / f".{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(trace + content)
        try:
            n = 0
            while True:
                path = self.directory / (f"{stem}.eml" if n == 0 else f"{stem}.dup-{n}.eml")
                try:
                    # link() is atomic and refuses to overwrite: readers never see a partial
                    # file, and two sinks sharing a directory still cannot clobber each other.
                    os.link(tmp, path)
                    break
                except FileExistsError:
                    n += 1
        finally:
            tmp.unlink()
        with self._lock:
            self._received += 1
            self._duplicates += n > 0
        return path


class _Handler:
    """aiosmtpd hooks; runs on the sink's own event loop thread."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_EHLO(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # This hook style must record the name itself; aiosmtpd checks it before MAIL.
        first = session.host_name is None and session.ssl is None  # not the post-STARTTLS EHLO
        session.host_name = hostname
        if first:
            with self._sink._lock:
                self._sink._connections += 1
        return responses

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self._sink.fail_rcpt_with
        if reply is not None:
            return f"{reply[0]} {reply[1]}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        sink = self._sink
        if sink.delay_s > 0:
            await asyncio.sleep(sink.delay_s)
            transport = getattr(server, "transport", None)
            reader = getattr(server, "_reader", None)
            # A killed client's FIN shows only as EOF on the reader (the transport stays
            # half-open), so check both.
            if transport is None or transport.is_closing() or (reader and reader.at_eof()):
                # The client went away before we answered: like an MTA that has not yet
                # committed the message, keep nothing (the client will send it again).
                with sink._lock:
                    sink._abandoned += 1
                return "421 client gone"
        reply = sink.fail_with
        if reply is not None:
            with sink._lock:
                sink._rejected += 1
            return f"{reply[0]} {reply[1]}"
        # Blocking file I/O is fine here: this loop serves only the sink, in its own thread.
        path = sink._store(envelope)
        return f"250 OK stored as {path.name}"


def _check_port_free(port: int) -> None:
    # aiosmtpd reports a busy port only after its whole ready_timeout; fail at once instead.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"127.0.0.1:{port} is busy ({exc.strerror}): stop the other "
                "process or pick another port (0 = any free port)",
            ) from exc


def _parse_reply(text: str) -> tuple[int, str]:
    code, _, message = text.partition(":")
    try:
        return int(code), message or "Refused by the tidings SMTP sink"
    except ValueError:
        msg = f"expected CODE:TEXT such as 451:busy, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sink until SIGINT/SIGTERM and return 0; raises SystemExit on bad args; blocks."""
    parser = argparse.ArgumentParser(
        prog="python -m streams.dev.smtp_sink", description="A local SMTP sink writing .eml files."
    )
    parser.add_argument("--port", type=int, default=12525, help="0 = any free port")
    parser.add_argument("--dir", type=Path, default=Path(".local/mail"), help="where .eml go")
    parser.add_argument("--fail-with", type=_parse_reply, help="answer DATA with CODE:TEXT")
    parser.add_argument("--delay-s", type=float, default=0.0, help="wait before each reply")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate: enables STARTTLS")
    parser.add_argument("--tls-key", type=Path, help="PEM key for --tls-cert")
    parser.add_argument("--user", help="require AUTH (password: $TIDINGS_SINK_PASSWORD)")
    args = parser.parse_args(argv)
    credentials: dict[str, str] = {}
    if args.user:
        password = os.environ.get("TIDINGS_SINK_PASSWORD")
        if not password:
            parser.error("--user needs the password in the TIDINGS_SINK_PASSWORD variable")
        credentials[args.user] = password
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before start(): a SIGTERM during start-up must still end in a clean stop.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        sink = SmtpSink(
            args.dir,
            port=args.port,
            fail_with=args.fail_with,
            delay_s=args.delay_s,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            credentials=credentials,
        )
        sink.start()
    except (OSError, ValueError) as exc:
        parser.exit(2, f"smtp sink: cannot start: {exc}\n")
    print(f"smtp sink listening on 127.0.0.1:{sink.port}, mail in {args.dir}", flush=True)
    try:
        while not stop.wait(0.5):  # a timed wait: signal handlers run between the waits
            pass
    finally:
        sink.stop()
    s = sink.stats()
    print(f"smtp sink stopped: {s.received} received, {s.duplicates} duplicates, "
          f"{s.rejected} rejected", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
