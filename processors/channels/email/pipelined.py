"""One SMTP mail transaction with RFC 2920 PIPELINING, on a connection aiosmtplib opened.

aiosmtplib pairs every write with one read: its protocol drops (or strands) a reply that
arrives while the previous one is parsed but not yet picked up, so it cannot pipeline. For
one transaction, `pipelined_sendmail` swaps the transport's protocol for `_ReplyReader`
(which queues every reply it parses), sends MAIL, RCPT and DATA in one write, the body in a
second, and puts aiosmtplib's protocol back. Two round-trips and two writes per mail instead
of four; aiosmtplib still does connect, EHLO, STARTTLS, AUTH, NOOP and QUIT.

Errors are those `aiosmtplib.SMTP.sendmail` raises for the same replies (SMTPSenderRefused,
SMTPRecipientsRefused, SMTPDataError, SMTPReadTimeoutError, SMTPServerDisconnected, ValueError,
SMTPNotSupported), and as there a refused envelope or message is followed by RSET, so the
connection can carry the next mail. Any reply the transaction did not ask for closes it.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections import deque
from collections.abc import Sequence

import aiosmtplib
from aiosmtplib.email import quote_address

__all__ = ["can_pipeline", "data_payload", "envelope_args", "pipelined_sendmail"]

# aiosmtplib's limits for one reply line and one whole (multi-line) reply.
MAX_LINE_LENGTH = 8192
MAX_RESPONSE_LENGTH = MAX_LINE_LENGTH * 4
# A transaction awaits at most 4 replies; more queued than this is a server talking to itself.
_MAX_QUEUED = 8
_INVALID = aiosmtplib.SMTPStatus.invalid_response.value
# As aiosmtplib: lone CR and LF become CRLF; a C0 control or DEL in a command is injection.
_LINE_ENDINGS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
_COMMAND_INJECTION = re.compile(rb"[\x00-\x1f\x7f]")


def can_pipeline(smtp: aiosmtplib.SMTP) -> bool:
    """Whether `pipelined_sendmail` may run: PIPELINING offered, an asyncio transport; pure."""
    protocol = smtp.protocol
    return (
        smtp.supports_extension("pipelining")
        and protocol is not None
        and isinstance(protocol.transport, asyncio.Transport)
    )


@functools.lru_cache(maxsize=4096)
def _quoted(address: str) -> str:
    # aiosmtplib's quoting parses the address with email.utils (~7 µs); the sender is the
    # same for every mail, and recipients come back. A refused address raises, uncached.
    return quote_address(address)


def envelope_args(sender: str, recipient: str, options: Sequence[bytes]) -> tuple[bytes, bytes]:
    """The quoted MAIL FROM and RCPT TO addresses; raises ValueError as aiosmtplib would; pure.

    aiosmtplib checks each command as it sends it, so an address it refuses at RCPT leaves the
    MAIL it already sent open; checking both first keeps a refused mail from doing that.
    """
    utf8 = b"smtputf8" in (o.lower() for o in options)
    encoding = "utf-8" if utf8 else "ascii"
    mail_from = _quoted(sender).encode(encoding)
    rcpt_to = _quoted(recipient).encode(encoding)
    for arg in (mail_from, rcpt_to, *options):
        if _COMMAND_INJECTION.search(arg):
            raise ValueError("Command arg contains a prohibited control character")
    return mail_from, rcpt_to


def data_payload(message: bytes) -> bytes:
    """`message` as DATA transmits it: CRLF line endings, final CRLF; pure, no dot-stuffing.

    The same bytes as aiosmtplib's normalisation, without its regex for the two shapes tidings
    produces: LF-only (processors.channels.email.mime) and CRLF-only (the stdlib generator).
    """
    if b"\r" not in message:
        message = message.replace(b"\n", b"\r\n")
    elif not message.count(b"\r\n") == message.count(b"\r") == message.count(b"\n"):
        message = _LINE_ENDINGS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message


def _dot_stuffed(payload: bytes) -> bytes:
    """RFC 5321 §4.5.2 for a `data_payload`: a dot opening a line gets another, then "."."""
    stuffed = payload.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        return b"." + stuffed + b".\r\n"
    return stuffed + b".\r\n"


class _ReplyReader(asyncio.Protocol):
    """Parses SMTP replies into a queue while it is the transport's protocol."""

    def __init__(self, inner: asyncio.BaseProtocol) -> None:
        self._inner = inner  # aiosmtplib's protocol: told about flow control and loss
        self._buffer = bytearray()  # bytes of the reply being parsed
        self._lines: list[bytes] = []  # its message lines so far ("250-..." continuations)
        self._size = 0  # bytes of those lines: a reply is bounded, not just each line
        self._replies: deque[aiosmtplib.SMTPResponse] = deque()
        self._error: aiosmtplib.SMTPException | None = None  # raised once the queue is empty
        self._waiter: asyncio.Future[None] | None = None

    @property
    def idle(self) -> bool:
        """True when no reply, partial reply or error waits: the session is where we left it."""
        return not (self._replies or self._buffer or self._lines or self._error)

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        buf = self._buffer
        buf += data
        try:
            while (end := buf.find(b"\n")) != -1:
                line = bytes(buf[: end + 1])
                del buf[: end + 1]
                self._line(line)
            if len(buf) > MAX_LINE_LENGTH:
                raise aiosmtplib.SMTPResponseException(_INVALID, "Response too long")
        except aiosmtplib.SMTPResponseException as exc:
            buf.clear()
            self._fail(exc)
            return
        self._wake()

    def _line(self, line: bytes) -> None:
        # The limits, checks and message format of aiosmtplib's SMTPProtocol.
        self._size += len(line)
        if len(line) > MAX_LINE_LENGTH or self._size > MAX_RESPONSE_LENGTH:
            raise aiosmtplib.SMTPResponseException(_INVALID, "Response too long")
        try:
            code = int(line[:3])
        except ValueError:
            text = line.decode("utf-8", errors="ignore")
            raise aiosmtplib.SMTPResponseException(
                _INVALID, f"Malformed SMTP response line: {text}"
            ) from None
        self._lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] == b"-":
            return
        message = b"\n".join(self._lines).decode("utf-8", "surrogateescape")
        self._lines.clear()
        self._size = 0
        if len(self._replies) >= _MAX_QUEUED:
            raise aiosmtplib.SMTPResponseException(_INVALID, "Unexpected replies")
        self._replies.append(aiosmtplib.SMTPResponse(code, message))

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._fail(lost)
        self._inner.connection_lost(exc)  # aiosmtplib then marks the SMTP client closed

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _fail(self, exc: aiosmtplib.SMTPException) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def reply(self, timeout: float | None) -> aiosmtplib.SMTPResponse:
        """The next reply; raises SMTPReadTimeoutError, SMTPServerDisconnected, or a bad reply."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError as exc:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response"
                ) from exc
            finally:
                self._waiter = None
        return self._replies.popleft()


async def pipelined_sendmail(
    smtp: aiosmtplib.SMTP,
    sender: str,
    recipient: str,
    message: bytes,
    *,
    mail_options: Sequence[str] = (),
) -> aiosmtplib.SMTPResponse:
    """`smtp.sendmail(sender, [recipient], message, mail_options=...)`, pipelined.

    Needs `can_pipeline(smtp)` and exclusive use of `smtp`; returns the final 250 reply. Raises
    as sendmail does; after a timeout, a disconnect or a malformed reply the connection is closed.
    """
    options = [o.encode("ascii") for o in mail_options]
    # Everything is checked before the first byte is sent: a half-sent envelope must never
    # stay open on a connection the pool reuses.
    mail_from, rcpt_to = envelope_args(sender, recipient, options)
    if b"smtputf8" in (o.lower() for o in options) and not smtp.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
    payload = data_payload(message)
    if smtp.supports_extension("size"):
        # RFC 1870: octets as transmitted, CRLFs included, before dot-stuffing; spelt as
        # aiosmtplib does, so a server sees the very same MAIL command as without pipelining.
        options.insert(0, b"size=%d" % len(payload))
    mail = b" ".join([b"MAIL FROM:" + mail_from, *options])
    protocol = smtp.protocol
    transport = protocol.transport if protocol is not None else None
    if not isinstance(transport, asyncio.Transport) or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    inner = transport.get_protocol()
    reader = _ReplyReader(inner)
    transport.set_protocol(reader)
    envelope = mail + b"\r\nRCPT TO:" + rcpt_to + b"\r\nDATA\r\n"
    try:
        response = await _transaction(transport, reader, envelope, payload, smtp, sender, recipient)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
        if not reader.idle:  # a malformed reply or one nobody asked for: the state is unknown
            transport.close()
        raise
    except BaseException:
        transport.close()  # a timeout, disconnect or cancellation: as sendmail, never reuse
        raise
    else:
        if not reader.idle:  # the next transaction would read a stray reply as its own
            transport.close()
        return response
    finally:
        transport.set_protocol(inner)
        if transport.is_closing():
            smtp.close()


def _write(transport: asyncio.Transport, data: bytes) -> None:
    if transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    transport.write(data)


async def _transaction(
    transport: asyncio.Transport,
    reader: _ReplyReader,
    envelope: bytes,
    payload: bytes,
    smtp: aiosmtplib.SMTP,
    sender: str,
    recipient: str,
) -> aiosmtplib.SMTPResponse:
    timeout = smtp.timeout
    refused: aiosmtplib.SMTPException | None = None
    _write(transport, envelope)
    try:
        reply = await reader.reply(timeout)
        if reply.code != aiosmtplib.SMTPStatus.completed:
            refused = aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
        reply = await reader.reply(timeout)
        if refused is None and reply.code not in (250, 251):
            refused = aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)]
            )
        start = await reader.reply(timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException):
        if refused is None:
            raise
        # It said why before hanging up (a 421, say) or talking nonsense: report that, as
        # sendmail, which stops at the first refusal, would.
        transport.close()
        raise refused from None
    if refused is None and start.code != aiosmtplib.SMTPStatus.start_input:
        refused = aiosmtplib.SMTPDataError(start.code, start.message)
    if refused is not None:
        # RFC 2920 §3.1: a 354 despite a refused envelope opened a data phase; a lone "."
        # ends it. Then RSET, as sendmail does after any refusal.
        await _reset(transport, reader, timeout, end_data=start.code == 354)
        raise refused
    _write(transport, _dot_stuffed(payload))
    reply = await reader.reply(timeout)
    if reply.code != aiosmtplib.SMTPStatus.completed:
        await _reset(transport, reader, timeout, end_data=False)
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return reply


async def _reset(
    transport: asyncio.Transport, reader: _ReplyReader, timeout: float | None, *, end_data: bool
) -> None:
    # Like sendmail's RSET: its refusal or a disconnect is not reported (the refusal that
    # led here is), a timeout is, and closes the connection.
    try:
        _write(transport, b".\r\nRSET\r\n" if end_data else b"RSET\r\n")
        for _ in range(1 + end_data):
            await reader.reply(timeout)
    except (ConnectionError, aiosmtplib.SMTPResponseException):
        transport.close()
