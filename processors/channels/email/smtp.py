"""The email channel: build a MIME message for one notification and send it over SMTP.

`SmtpSender` pools a few reusable connections rather than sharing one: SMTP runs one
transaction at a time per connection, so a provider's 50-300 ms round-trips would cap a single
connection at a few sends/s. Where the server offers PIPELINING, a mail costs 2 round-trips
instead of 4 (see processors.channels.email.pipelined). Every aiosmtplib error leaves as
Retryable/PermanentSendError.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib
from aiosmtplib.email import flatten_message

from processors.channels.email.mime import RawMail
from processors.channels.email.pipelined import can_pipeline, envelope_args, pipelined_sendmail
from processors.exceptions import PermanentSendError, ProcessorError, RetryableSendError
from schemas.settings import SmtpSettings

__all__ = ["SmtpSender", "build_message"]

log = logging.getLogger(__name__)

NOTIFICATION_ID_HEADER = "X-Tidings-Notification-Id"

# RFC 5322 dot-atom-text: what may stand on either side of the "@" in a Message-ID.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
# Controls and every separator str.splitlines() honours: header injection or a refused mail.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# RFC 5322 field name: printable US-ASCII except ":".
_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")
# Headers build_message owns; a caller overriding them would break threading, dedup or MIME.
_RESERVED = frozenset({
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version",
    "content-type", "content-transfer-encoding", "x-tidings-notification-id", "auto-submitted",
})  # fmt: skip


def build_message(
    *,
    notification_id: str,
    to: str,
    subject: str,
    html: str | None,
    text: str,
    settings: SmtpSettings,
    headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """Build text(+HTML) mail; raises PermanentSendError (bad to/header/id), ValueError; no I/O."""
    if not _DOT_ATOM.match(settings.message_id_domain):
        raise ValueError(
            f"smtp.message_id_domain {settings.message_id_domain!r} is not a valid domain: "
            "set TIDINGS_SMTP__MESSAGE_ID_DOMAIN to a plain domain such as mail.example.com"
        )
    if not _DOT_ATOM.match(notification_id):
        raise PermanentSendError(
            f"notification id {notification_id!r} cannot form a Message-ID (only letters, "
            "digits, dots and RFC 5322 atom symbols are allowed): fix how ids are derived",
            code="invalid_notification_id",
        )
    msg = EmailMessage()
    _set_from(msg, settings.from_address)
    _set_recipient(msg, to)
    # Templates may wrap a subject over lines; folding it here is safer than refusing, and
    # removes any chance of header injection through the subject.
    msg["Subject"] = " ".join(_CONTROL.sub(" ", subject).split())
    msg["Date"] = format_datetime(datetime.now(UTC))
    # Deterministic: a retried or replayed notification reuses the id, so receivers and
    # the sink can recognise a re-delivery instead of showing two different mails.
    msg["Message-ID"] = f"<{notification_id}@{settings.message_id_domain}>"
    msg[NOTIFICATION_ID_HEADER] = notification_id
    # RFC 3834: tells auto-responders (vacation replies) not to answer notifications.
    msg["Auto-Submitted"] = "auto-generated"
    for name, value in _checked_headers(headers or {}):
        msg[name] = value
    msg.set_content(text, charset="utf-8")
    if html is not None:
        # Text first, HTML last: clients show the last alternative they can render.
        msg.add_alternative(html, subtype="html", charset="utf-8")
    return msg


def _set_recipient(msg: EmailMessage, to: str) -> None:
    if _CONTROL.search(to):
        raise _bad_address(to, "it contains a line break or control character")
    try:
        msg["To"] = to
        header = msg["To"]
        ok = _is_one_address(header.addresses) and not any(
            # Non-ASCII local parts are fine (sent with SMTPUTF8); every other defect is not.
            not isinstance(d, NonASCIILocalPartDefect)
            for d in header.defects
        )
    except Exception as exc:  # the stdlib parser raises assorted types on garbage
        raise _bad_address(to, f"it cannot be parsed ({exc!r})") from exc
    if not ok:
        raise _bad_address(to, "it is not exactly one well-formed address local@domain")


def _is_one_address(addresses: tuple[Address, ...]) -> bool:
    return len(addresses) == 1 and bool(addresses[0].username and addresses[0].domain)


def _set_from(msg: EmailMessage, from_address: str) -> None:
    msg["From"] = from_address
    if not _is_one_address(msg["From"].addresses):
        raise ValueError(f"smtp.from_address {from_address!r} is not one address: fix it")


def _bad_address(to: str, why: str) -> PermanentSendError:
    hint = "fix the recipient's address in the directory"
    return PermanentSendError(f"recipient {to!r} refused: {why}: {hint}", code="invalid_address")


def _checked_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    names = {name.lower() for name in headers}
    for name, value in headers.items():
        why = ""
        if not _FIELD_NAME.match(name) or _CONTROL.search(value):
            why = "has an invalid name, or a line break or control character in its value"
        elif name.lower() in _RESERVED:
            why = "is set by tidings itself and cannot be overridden"
        if why:
            hint = "fix the template's headers"
            raise PermanentSendError(f"header {name!r} {why}: {hint}", code="invalid_header")
        out.append((name, value))
    # RFC 8058 one-click unsubscribe is only defined for an HTTPS URI in List-Unsubscribe;
    # advertising it for a mailto-only header makes Gmail/Yahoo flag the sender.
    unsubscribe = next((v for n, v in headers.items() if n.lower() == "list-unsubscribe"), "")
    if "<https://" in unsubscribe.lower() and "list-unsubscribe-post" not in names:
        out.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    return out


# Errors after which aiosmtplib has reset the envelope (RSET) or sent nothing at all, so the
# connection can serve the next message; a 421 closes it and _ready() notices.
_CLEAN_FAILURES = (
    aiosmtplib.SMTPResponseException,
    aiosmtplib.SMTPRecipientsRefused,
    aiosmtplib.SMTPNotSupported,
    ValueError,
)


class _Client(aiosmtplib.SMTP):
    """aiosmtplib.SMTP whose close() frees the socket at once."""

    def close(self) -> None:
        # A TLS transport's close() holds the socket until the peer answers close_notify
        # (up to 30 s); a session we end has nothing left to flush, so abort it instead.
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.abort()
        super().close()


@dataclass(slots=True)
class _Slot:
    """One pooled connection: None until first use or after it was dropped."""

    smtp: aiosmtplib.SMTP | None = None
    last_used: float = 0.0
    sent: int = 0

    def drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
        self.smtp = None


class SmtpSender:
    """Sends EmailMessages over a pool of `pool_size` reusable SMTP connections."""

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        pool_size: int = 4,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        idle_check_s: float = 30.0,
        max_per_connection: int = 1000,
    ) -> None:
        """Validate settings, prepare the pool; raises ValueError; connects nothing, no I/O."""
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        if settings.use_tls and settings.starttls:
            raise ValueError("smtp.use_tls (port 465) and smtp.starttls (587): choose one")
        _set_from(EmailMessage(), settings.from_address)  # a config error: fail at start-up
        if settings.username and not (settings.use_tls or settings.starttls):
            log.warning("SMTP credentials for %s will be sent without TLS", settings.host)
        self._settings = settings
        self._tls_context = tls_context
        # The EHLO name: aiosmtplib would otherwise resolve socket.getfqdn() per connection,
        # a DNS lookup that can stall for seconds in containers and names a pod nobody knows.
        self._local_hostname = local_hostname or settings.message_id_domain
        self._idle_check_s = idle_check_s
        self._max_per_connection = max_per_connection
        self._pool_size = pool_size
        # LIFO: a light load keeps reusing the warmest connection instead of opening all N.
        self._idle: asyncio.LifoQueue[_Slot] = asyncio.LifoQueue()
        for _ in range(pool_size):
            self._idle.put_nowait(_Slot())
        self._closed = False

    async def __aenter__(self) -> SmtpSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(self, message: EmailMessage) -> str:
        """Send; return the Message-ID; raises Retryable/PermanentSendError; awaits, no blocking."""
        message_id, sender, recipient = _envelope(message)
        return await self._transaction(
            message_id, lambda smtp: _send_message(smtp, message, sender, recipient)
        )

    async def send_raw(self, mail: RawMail) -> str:
        """Send pre-built bytes (see processors.channels.email.mime); same contract as `send`."""
        return await self._transaction(
            mail.message_id, lambda smtp: _sendmail(smtp, mail.sender, mail.recipient, mail.data)
        )

    async def _transaction(
        self, message_id: str, run: Callable[[aiosmtplib.SMTP], Awaitable[object]]
    ) -> str:
        slot = await self._idle.get()  # after close() every slot is idle: no waiting
        try:
            if self._closed:
                raise RuntimeError("SmtpSender.send() after close(): create a new sender")
            smtp = await self._ready(slot)
            try:
                await run(smtp)
            except BaseException as exc:
                if not isinstance(exc, _CLEAN_FAILURES):
                    # Timeout, disconnect, cancellation: the protocol state is unknown, so
                    # never hand this connection to the next message.
                    slot.drop()
                if not isinstance(exc, Exception):
                    raise
                raise _translate(exc, message_id) from exc
            slot.sent += 1
            slot.last_used = time.monotonic()
            return message_id
        finally:
            self._idle.put_nowait(slot)

    async def _ready(self, slot: _Slot) -> aiosmtplib.SMTP:
        smtp = slot.smtp
        if smtp is not None and (not smtp.is_connected or slot.sent >= self._max_per_connection):
            await _quit(smtp, self._settings.timeout_s)
            smtp = slot.smtp = None
        if smtp is not None and time.monotonic() - slot.last_used > self._idle_check_s:
            # Servers drop idle sessions (often after 60-300 s) without us noticing until
            # MAIL FROM fails; a NOOP costs one round-trip and avoids a spurious retry.
            try:
                await smtp.noop()
            except BaseException as exc:
                slot.drop()
                smtp = None
                if not isinstance(exc, Exception):
                    raise
        if smtp is not None:
            return smtp
        s = self._settings
        smtp = _Client(
            hostname=s.host,
            port=s.port,
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
            use_tls=s.use_tls,
            # False, not None: opportunistic STARTTLS would silently change behaviour with the
            # server's capabilities; the setting decides, so failures are loud and repeatable.
            start_tls=s.starttls,
            validate_certs=s.validate_certs,
            tls_context=self._tls_context,
            timeout=s.timeout_s,
            local_hostname=self._local_hostname,
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:  # connect() greets only for STARTTLS or AUTH
                await _greet(smtp)
        except BaseException as exc:
            smtp.close()
            if not isinstance(exc, Exception):
                raise
            raise _translate_setup(exc, s) from exc
        slot.smtp, slot.sent, slot.last_used = smtp, 0, time.monotonic()
        return smtp

    async def close(self) -> None:
        """Wait for in-flight sends, QUIT every connection; idempotent, raises nothing; awaits."""
        if self._closed:
            return
        self._closed = True
        slots = [await self._idle.get() for _ in range(self._pool_size)]
        try:
            await asyncio.gather(
                *(_quit(slot.smtp, self._settings.timeout_s) for slot in slots if slot.smtp)
            )
        finally:
            for slot in slots:
                slot.smtp = None
                # Put them back so a late send() fails fast instead of waiting forever.
                self._idle.put_nowait(slot)


async def _greet(smtp: aiosmtplib.SMTP) -> None:
    # What sendmail would do on first use, done here instead: the first mail can pipeline too,
    # and a refused EHLO/HELO is about the session, not the message (retryable, as setup).
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not smtp.is_connected:
            raise
        await smtp.helo()


async def _quit(smtp: aiosmtplib.SMTP, timeout_s: float) -> None:
    try:
        if smtp.is_connected:
            await smtp.quit(timeout=min(timeout_s, 5.0))
    except (aiosmtplib.SMTPException, OSError):
        pass  # best effort: the server may already have gone; close() below frees the socket
    finally:
        smtp.close()


async def _sendmail(
    smtp: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes, options: Sequence[str] = ()
) -> None:
    if can_pipeline(smtp):
        # RFC 2920: MAIL+RCPT+DATA in one write, the body in a second, 2 round-trips not 4.
        await pipelined_sendmail(smtp, sender, recipient, data, mail_options=options)
        return
    # sendmail checks each address as it sends its command: one it refuses at RCPT would
    # leave the MAIL already sent open on a connection the pool keeps. Check both first.
    envelope_args(sender, recipient, [o.encode("ascii") for o in options])
    await smtp.sendmail(sender, [recipient], data, mail_options=options)


async def _send_message(
    smtp: aiosmtplib.SMTP, message: EmailMessage, sender: str, recipient: str
) -> None:
    # What aiosmtplib's send_message does before its sendmail: the same options, same bytes.
    utf8 = not (sender.isascii() and recipient.isascii())
    options: list[str] = []
    if utf8:
        if not smtp.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported(
                "An address containing non-ASCII characters was provided, but "
                "SMTPUTF8 is not supported by this server"
            )
        options.append("SMTPUTF8")
    eight_bit = smtp.supports_extension("8BITMIME")
    if eight_bit:
        options.append("BODY=8BITMIME")
    data = flatten_message(message, utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
    await _sendmail(smtp, sender, recipient, data, options)


def _envelope(message: EmailMessage) -> tuple[str, str, str]:
    try:
        message_id = str(message["Message-ID"] or "")
        senders: tuple[Address, ...] = message["From"].addresses if message["From"] else ()
        recipients: tuple[Address, ...] = message["To"].addresses if message["To"] else ()
    except (AttributeError, ValueError):
        senders = recipients = ()
    if not message_id or len(senders) != 1 or len(recipients) != 1:
        why = "it needs a Message-ID, one From and one To (one recipient): use build_message()"
        raise PermanentSendError(f"message refused: {why}", code="invalid_message")
    return message_id, senders[0].addr_spec, recipients[0].addr_spec


_ErrorRule = tuple[
    type[BaseException] | tuple[type[BaseException], ...], type[ProcessorError], str, str
]
# First match wins, so subclasses come before their bases.
_SEND_RULES: tuple[_ErrorRule, ...] = (
    (aiosmtplib.SMTPNotSupported, PermanentSendError, "smtputf8_unsupported",
     "the address needs SMTPUTF8, which the server lacks: use an ASCII address"),
    (ValueError, PermanentSendError, "invalid_message",
     "the message cannot be serialised: fix the address or headers"),
    ((aiosmtplib.SMTPTimeoutError, TimeoutError), RetryableSendError, "timeout",
     "no answer in time (the server may have accepted it; the stable Message-ID lets "
     "receivers dedupe): retry later"),
    ((aiosmtplib.SMTPServerDisconnected, ConnectionError), RetryableSendError, "disconnected",
     "the server dropped the connection: retry later"),
    (BaseException, RetryableSendError, "smtp_error",
     "unexpected error: retry later, and report it if it persists"),
)  # fmt: skip
# Setup (connect, EHLO, STARTTLS, AUTH) never fails because of the message: always retry,
# so a config or provider outage trips the breaker instead of dead-lettering everything.
_SETUP_RULES: tuple[_ErrorRule, ...] = (
    (aiosmtplib.SMTPAuthenticationError, RetryableSendError, "smtp_auth_failed",
     "login refused: check TIDINGS_SMTP__USERNAME and TIDINGS_SMTP__PASSWORD"),
    (aiosmtplib.SMTPResponseException, RetryableSendError, "smtp_connect_refused",
     "the server refused the session: the provider is unavailable or refuses this client"),
    ((aiosmtplib.SMTPTimeoutError, TimeoutError), RetryableSendError, "connect_timeout",
     "timed out: check host, port and firewall, or raise TIDINGS_SMTP__TIMEOUT_S"),
    (ssl.SSLError, RetryableSendError, "tls_failed",
     "TLS failed: check the server certificate and TIDINGS_SMTP__USE_TLS/STARTTLS/"
     "VALIDATE_CERTS"),
    ((aiosmtplib.SMTPConnectError, OSError), RetryableSendError, "connect_failed",
     "cannot connect: is the server running? Check TIDINGS_SMTP__HOST and __PORT"),
    (BaseException, RetryableSendError, "smtp_setup_failed",
     "session setup failed: compare the TLS and auth settings with what the server offers"),
)  # fmt: skip


def _by_rules(exc: BaseException, where: str, rules: tuple[_ErrorRule, ...]) -> ProcessorError:
    for types, cls, code, hint in rules:
        if isinstance(exc, types):
            return cls(f"{where}: {hint} ({type(exc).__name__}: {exc})", code=code)
    raise AssertionError("the last rule matches everything")  # pragma: no cover


def _translate(exc: BaseException, message_id: str) -> ProcessorError:
    """Map an error raised during MAIL/RCPT/DATA to what the deliver stage must do."""
    where = f"sending {message_id}"
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        code = max((r.code for r in exc.recipients), default=0)
        return _by_code(code, f"{where}: recipient refused ({detail})")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(exc.code, f"{where}: server answered {exc.code} {exc.message}")
    return _by_rules(exc, where, _SEND_RULES)


def _by_code(code: int, what: str) -> ProcessorError:
    if code in (530, 534, 538):
        # "Authentication/STARTTLS required" is about our setup, not this message:
        # dead-lettering everything until someone fixes the config is the worse failure.
        hint = "set TIDINGS_SMTP__STARTTLS (or USE_TLS) and TIDINGS_SMTP__USERNAME/PASSWORD"
        return RetryableSendError(f"{what}: {hint}", code="smtp_auth_required")
    if 500 <= code < 600:
        hint = "permanent rejection: fix the address or content, retrying cannot help"
        return PermanentSendError(f"{what}: {hint}", code=f"smtp_{code}")
    return RetryableSendError(f"{what}: temporary failure, retry later", code=f"smtp_{code}")


def _translate_setup(exc: BaseException, s: SmtpSettings) -> ProcessorError:
    """Map a connect/EHLO/STARTTLS/AUTH error; always retryable."""
    where = f"connecting to {s.host}:{s.port}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        where = f"{where}: server answered {exc.code}"
    return _by_rules(exc, where, _SETUP_RULES)
