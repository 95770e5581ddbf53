"""SmtpSender's RFC 2920 pipelined transaction against a scripted server over real sockets.

The scripted server answers each complete line as it arrives (as a pipelining server does),
records what came in which TCP read, and can refuse, stall, talk nonsense or hang up at any
step: the cases aiosmtpd cannot be made to produce.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import aiosmtplib
import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from processors import PermanentSendError, RetryableSendError
from processors.channels.email import RawMail, SmtpSender
from processors.channels.email.pipelined import _dot_stuffed, _ReplyReader, data_payload

from .helpers import make, smtp_settings

SENDER = "notifications@tidings.local"
BOUNDARY = re.compile(rb"===============\d+==")


@dataclass
class Script:
    """How the server answers; `hang_up`/`stall` name a step: MAIL, RCPT, DATA or BODY."""

    extensions: tuple[str, ...] = ("PIPELINING", "SIZE 10000000", "8BITMIME")
    mail: str = "250 2.1.0 OK"
    rcpt: str = "250 2.1.5 OK"
    data: str | None = None  # None: 354 after an accepted envelope, else 503 (RFC 2920 §3.1)
    final: str = "250 2.0.0 queued"
    hang_up: str = ""  # close the connection instead of answering this step
    stall: str = ""  # answer nothing from this step on


@dataclass
class Server:
    script: Script
    port: int = 0
    connections: int = 0
    reads: list[bytes] = field(default_factory=list)  # every TCP read, as received
    commands: list[bytes] = field(default_factory=list)  # command lines, EHLO included
    bodies: list[bytes] = field(default_factory=list)  # DATA payloads as sent (dot-stuffed)

    def commands_after_ehlo(self) -> list[str]:
        return [c.split(b" ")[0].decode() for c in self.commands if not c.startswith(b"EHLO")]


class _Session(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server, self.buf, self.in_data, self.stalled = server, bytearray(), False, False
        self.envelope_ok = [False, False]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        transport.write(b"220 scripted ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.server.reads.append(data)
        self.buf += data
        while not self.transport.is_closing():
            if self.in_data:
                if self.buf.startswith(b".\r\n"):
                    end = 0  # an empty payload: the terminator alone
                elif (crlf := self.buf.find(b"\r\n.\r\n")) != -1:
                    end = crlf + 2
                else:
                    return
                self.server.bodies.append(bytes(self.buf[:end]))
                del self.buf[: end + 3]
                self.in_data = False
                self.answer("BODY", self.server.script.final)
                continue
            end = self.buf.find(b"\r\n")
            if end == -1:
                return
            line = bytes(self.buf[:end])
            del self.buf[: end + 2]
            self.server.commands.append(line)
            self.command(line)

    def command(self, line: bytes) -> None:
        s = self.server.script
        verb = line.split(b" ")[0].upper().decode()
        if verb == "EHLO":
            lines = ["scripted", *s.extensions]
            self.reply("\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{x}"
                                   for i, x in enumerate(lines)))  # fmt: skip
        elif verb == "MAIL":
            self.envelope_ok = [s.mail.startswith("250"), False]
            self.answer(verb, s.mail)
        elif verb == "RCPT":
            self.envelope_ok[1] = self.envelope_ok[0] and s.rcpt.startswith("25")
            self.answer(verb, s.rcpt if self.envelope_ok[0] else "503 5.5.1 need MAIL")
        elif verb == "DATA":
            reply = s.data or ("354 go ahead" if all(self.envelope_ok) else "503 5.5.1 no RCPT")
            self.in_data = reply.startswith("354")
            self.answer(verb, reply)
        elif verb == "QUIT":
            self.reply("221 bye")
            self.transport.close()
        else:  # RSET, NOOP
            self.envelope_ok = [False, False]
            self.reply("250 OK")

    def answer(self, step: str, reply: str) -> None:
        self.stalled = self.stalled or self.server.script.stall == step
        if self.server.script.hang_up == step:
            self.transport.close()
        elif not self.stalled:
            self.reply(reply)
            if reply.startswith("421"):
                self.transport.close()

    def reply(self, text: str) -> None:
        self.transport.write(text.encode() + b"\r\n")


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[Server]:
    server = Server(script)
    listener = await asyncio.get_running_loop().create_server(
        lambda: _Session(server), "127.0.0.1", 0
    )
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server


def raw(n: str = "r-1", to: str = "jane@example.com", data: bytes = b"") -> RawMail:
    body = data or b"Subject: hi\n\nhello\n"
    return RawMail(f"<{n}@tidings.local>", SENDER, to, f"Message-ID: <{n}@t>\n".encode() + body)


Body = Callable[[SmtpSender, Server], Awaitable[None]]


def run(script: Script, body: Body, timeout_s: float = 5.0) -> Server:
    async def go() -> Server:
        async with scripted(script) as server:
            async with SmtpSender(smtp_settings(server.port, timeout_s=timeout_s)) as sender:
                await body(sender, server)
            return server

    return asyncio.run(go())


def test_envelope_goes_in_one_write_and_the_body_arrives_exact() -> None:
    data = b".starts with a dot\n..two\n.\nbare\rcr\r\ncrlf\nno final newline"
    mail = raw(data=data)

    async def body(sender: SmtpSender, server: Server) -> None:
        assert await sender.send_raw(mail) == mail.message_id

    server = run(Script(), body)
    size = len(normalize_message_line_endings(mail.data))
    envelope = f"MAIL FROM:<{SENDER}> size={size}\r\nRCPT TO:<jane@example.com>\r\nDATA\r\n"
    assert envelope.encode() in server.reads  # one TCP read: sent as one write
    # The same wire bytes as aiosmtplib's sendmail: CRLF-normalised, then dot-stuffed.
    assert server.bodies == [PERIOD_REGEX.sub(b"..", normalize_message_line_endings(mail.data))]
    assert server.commands_after_ehlo() == ["MAIL", "RCPT", "DATA", "QUIT"]


def test_without_pipelining_every_command_waits_for_its_reply() -> None:
    mail = raw(data=b".dot\nline\n")

    async def body(sender: SmtpSender, server: Server) -> None:
        await sender.send_raw(mail)
        await sender.send(make("m-1"))

    server = run(Script(extensions=("SIZE 10000000", "8BITMIME")), body)
    assert not any(b"MAIL" in r and b"RCPT" in r for r in server.reads)
    assert server.bodies[0] == PERIOD_REGEX.sub(b"..", normalize_message_line_endings(mail.data))
    assert server.commands_after_ehlo() == ["MAIL", "RCPT", "DATA"] * 2 + ["QUIT"]


def test_mail_options_are_those_of_the_lockstep_path() -> None:
    messages = [make("m-1"), make("m-2", to="jörg@example.com")]

    async def body(sender: SmtpSender, server: Server) -> None:
        for message in messages:
            await sender.send(message)
        await sender.send_raw(raw())

    extensions = ("SIZE 10000000", "8BITMIME", "SMTPUTF8")
    lockstep = run(Script(extensions=extensions), body)
    pipelined = run(Script(extensions=("PIPELINING", *extensions)), body)
    assert pipelined.commands == lockstep.commands
    # Byte for byte, once the stdlib's random MIME boundaries are set aside.
    assert [BOUNDARY.sub(b"=b=", b) for b in pipelined.bodies] == [
        BOUNDARY.sub(b"=b=", b) for b in lockstep.bodies
    ]
    assert b"SMTPUTF8" in pipelined.commands[4] and b"BODY=8BITMIME" in pipelined.commands[4]
    assert pipelined.connections == lockstep.connections == 1
    assert len(pipelined.reads) < len(lockstep.reads)


def test_non_ascii_address_without_smtputf8_is_permanent_and_sends_nothing() -> None:
    async def body(sender: SmtpSender, server: Server) -> None:
        with pytest.raises(PermanentSendError) as info:
            await sender.send(make("m-1", to="jörg@example.com"))
        assert info.value.code == "smtputf8_unsupported"

    assert run(Script(), body).commands_after_ehlo() == ["QUIT"]


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelining"])
@pytest.mark.parametrize("to", ["jane@example.com\x00RSET", "jane doe@example.com"])
def test_an_unsafe_address_is_refused_before_anything_is_sent(pipelining: bool, to: str) -> None:
    async def body(sender: SmtpSender, server: Server) -> None:
        with pytest.raises(PermanentSendError) as info:
            await sender.send_raw(raw(to=to))
        assert info.value.code == "invalid_message"
        await sender.send_raw(raw("ok"))

    server = run(Script(extensions=("PIPELINING",) if pipelining else ()), body)
    assert server.commands_after_ehlo() == ["MAIL", "RCPT", "DATA", "QUIT"]


def test_an_address_is_refused_every_time_and_a_good_one_quoted_the_same_every_time() -> None:
    # The quoted addresses are cached: a refusal must not be, and a hit must send the same.
    async def body(sender: SmtpSender, server: Server) -> None:
        for _ in range(2):
            with pytest.raises(PermanentSendError) as info:
                await sender.send_raw(raw(to="jane@example.com\x00RSET"))
            assert info.value.code == "invalid_message"
            await sender.send_raw(raw("ok"))

    server = run(Script(), body)
    assert server.commands_after_ehlo() == ["MAIL", "RCPT", "DATA"] * 2 + ["QUIT"]
    rcpts = [c for c in server.commands if c.startswith(b"RCPT")]
    assert len(rcpts) == 2 and rcpts[0] == rcpts[1]


def test_a_line_break_in_an_address_never_reaches_the_wire() -> None:
    # aiosmtplib's parse_address keeps the first address only; the rest is never sent.
    async def body(sender: SmtpSender, server: Server) -> None:
        await sender.send_raw(raw(to="jane@example.com\r\nRCPT TO:<eve@evil.example>"))

    server = run(Script(), body)
    assert server.commands[2] == b"RCPT TO:<jane@example.com>"
    assert b"evil" not in b"".join(server.reads)


REFUSALS = [
    # (script, error, code, the aiosmtplib exception sendmail raises for it)
    (Script(mail="550 5.7.1 sender refused"), PermanentSendError, "smtp_550",
     aiosmtplib.SMTPSenderRefused),
    (Script(mail="451 4.3.0 try later"), RetryableSendError, "smtp_451",
     aiosmtplib.SMTPSenderRefused),
    (Script(mail="530 5.7.0 authentication required"), RetryableSendError,
     "smtp_auth_required", aiosmtplib.SMTPSenderRefused),
    (Script(rcpt="550 5.1.1 no such user"), PermanentSendError, "smtp_550",
     aiosmtplib.SMTPRecipientsRefused),
    (Script(rcpt="450 4.2.1 mailbox busy"), RetryableSendError, "smtp_450",
     aiosmtplib.SMTPRecipientsRefused),
    (Script(data="554 5.3.4 no data today"), PermanentSendError, "smtp_554",
     aiosmtplib.SMTPDataError),
    (Script(final="550 5.7.1 content refused"), PermanentSendError, "smtp_550",
     aiosmtplib.SMTPDataError),
    (Script(final="452 4.3.1 disk full"), RetryableSendError, "smtp_452",
     aiosmtplib.SMTPDataError),
    (Script(mail="250-first line\r\n250 second", final="550-multi\r\n550 line refusal"),
     PermanentSendError, "smtp_550", aiosmtplib.SMTPDataError),
]  # fmt: skip


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelining"])
@pytest.mark.parametrize(("script", "error", "code", "cause"), REFUSALS)
def test_refusals_map_as_before_and_the_connection_is_reused(
    pipelining: bool,
    script: Script,
    error: type[Exception],
    code: str,
    cause: type[Exception],
) -> None:
    if not pipelining:
        script = replace(script, extensions=("SIZE 10000000", "8BITMIME"))

    async def body(sender: SmtpSender, server: Server) -> None:
        with pytest.raises(error) as info:
            await sender.send_raw(raw("refused"))
        assert (info.value.code, type(info.value.__cause__)) == (code, cause)  # type: ignore[attr-defined]
        server.script = Script()  # the next mail is accepted, on the same connection
        await sender.send_raw(raw("next"))

    server = run(script, body)
    assert server.connections == 1
    # As sendmail: RSET after the refusal, so the next MAIL opens a fresh envelope.
    assert server.commands_after_ehlo()[-5:] == ["RSET", "MAIL", "RCPT", "DATA", "QUIT"]
    assert len(server.bodies) == 1 + (script.final != Script().final)


def test_354_after_a_refused_recipient_is_ended_with_a_dot_then_rset() -> None:
    # RFC 2920 §3.1: a server may accept DATA although it refused every RCPT.
    async def body(sender: SmtpSender, server: Server) -> None:
        with pytest.raises(PermanentSendError) as info:
            await sender.send_raw(raw("refused"))
        assert isinstance(info.value.__cause__, aiosmtplib.SMTPRecipientsRefused)
        server.script = Script()
        await sender.send_raw(raw("next"))

    server = run(Script(rcpt="550 5.1.1 no such user", data="354 go ahead anyway"), body)
    assert server.bodies[0] == b""  # the lone "." that closed the data phase, nothing more
    assert server.commands_after_ehlo() == [
        *("MAIL", "RCPT", "DATA", "RSET"),
        *("MAIL", "RCPT", "DATA", "QUIT"),
    ]
    assert (server.connections, len(server.bodies)) == (1, 2)


@pytest.mark.parametrize("step", ["MAIL", "RCPT", "DATA", "BODY"])
def test_hang_up_mid_transaction_drops_the_connection(step: str) -> None:
    async def body(sender: SmtpSender, server: Server) -> None:
        with pytest.raises(RetryableSendError) as info:
            await sender.send_raw(raw("lost"))
        assert info.value.code == "disconnected"
        assert isinstance(info.value.__cause__, aiosmtplib.SMTPServerDisconnected)
        server.script = Script()
        await sender.send_raw(raw("next"))

    server = run(Script(hang_up=step), body)
    assert server.connections == 2


def test_421_then_hang_up_reports_the_421_and_reconnects() -> None:
    async def body(sender: SmtpSender, server: Server) -> None:
        with pytest.raises(RetryableSendError) as info:
            await sender.send_raw(raw("closing"))
        assert info.value.code == "smtp_421"
        assert isinstance(info.value.__cause__, aiosmtplib.SMTPSenderRefused)
        server.script = Script()
        await sender.send_raw(raw("next"))

    assert run(Script(mail="421 4.3.2 shutting down"), body).connections == 2


@pytest.mark.parametrize("step", ["RCPT", "BODY"])
def test_no_answer_is_a_timeout_and_drops_the_connection(step: str) -> None:
    async def body(sender: SmtpSender, server: Server) -> None:
        with pytest.raises(RetryableSendError) as info:
            await sender.send_raw(raw("slow"))
        assert info.value.code == "timeout"
        assert isinstance(info.value.__cause__, aiosmtplib.SMTPReadTimeoutError)
        server.script = Script()
        await sender.send_raw(raw("next"))

    assert run(Script(stall=step), body, timeout_s=0.3).connections == 2


@pytest.mark.parametrize(
    ("script", "delivered"),
    [(Script(rcpt="2x0 what"), False),
     (Script(final="250 ok\r\n250 a reply nobody asked for"), True)],
    ids=["malformed", "stray"],
)  # fmt: skip
def test_a_confused_server_costs_its_connection(script: Script, delivered: bool) -> None:
    async def body(sender: SmtpSender, server: Server) -> None:
        if delivered:
            await sender.send_raw(raw("delivered"))  # the mail itself was accepted
        else:
            with pytest.raises(RetryableSendError) as info:
                await sender.send_raw(raw("confused"))
            assert info.value.code == "smtp_-1"
        server.script = Script()
        await sender.send_raw(raw("next"))

    assert run(script, body).connections == 2


def test_cancelled_send_drops_the_connection() -> None:
    async def body(sender: SmtpSender, server: Server) -> None:
        task = asyncio.create_task(sender.send_raw(raw("cancelled")))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        server.script = Script()
        await sender.send_raw(raw("next"))

    assert run(Script(stall="BODY"), body).connections == 2


def test_payload_and_dot_stuffing_match_aiosmtplib_exhaustively() -> None:
    for n in range(7):
        for chars in itertools.product([b"\r", b"\n", b".", b"a"], repeat=n):
            message = b"".join(chars)
            normalised = normalize_message_line_endings(message)
            assert data_payload(message) == normalised, message
            assert _dot_stuffed(normalised) == PERIOD_REGEX.sub(b"..", normalised) + b".\r\n"


class _Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost: list[Exception | None] = []

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def test_reply_reader_reassembles_replies_split_anywhere() -> None:
    wire = b"250-first\r\n250-second \r\n250 last\r\n354 go\r\n"

    async def go() -> None:
        for cut in range(1, len(wire)):
            reader = _ReplyReader(_Inner())
            reader.data_received(wire[:cut])
            reader.data_received(wire[cut:])
            assert await reader.reply(1.0) == (250, "first\nsecond\nlast")
            assert await reader.reply(1.0) == (354, "go")
            assert reader.idle

    asyncio.run(go())


@pytest.mark.parametrize(
    ("wire", "message"),
    [(b"250 " + b"x" * 9000, "Response too long"),
     (b"250 ok\r\n" * 9, "Unexpected replies"),
     (b"250-" + b"y" * 8000 + b"\r\n" + (b"250-" + b"y" * 8000 + b"\r\n") * 4,
      "Response too long"),
     (b"hello\r\n", "Malformed SMTP response line")],
)  # fmt: skip
def test_reply_reader_bounds_what_it_buffers(wire: bytes, message: str) -> None:
    async def go() -> None:
        inner = _Inner()
        reader = _ReplyReader(inner)
        reader.data_received(wire)
        with pytest.raises(aiosmtplib.SMTPResponseException) as info:
            for _ in range(9):
                await reader.reply(1.0)
        assert (info.value.code, message in info.value.message) == (-1, True)
        assert not reader.idle
        reader.connection_lost(None)
        assert inner.lost == [None]  # aiosmtplib's protocol still learns of the loss

    asyncio.run(go())
