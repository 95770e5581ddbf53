"""SmtpSender against a real aiosmtpd sink over real sockets: delivery, pool, error mapping.

Every test runs twice: against the sink as it is (lockstep MAIL, RCPT, DATA) and against the
sink advertising PIPELINING (RFC 2920), which SmtpSender then uses; see `sink_pipelining`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib
import pytest

from processors import PermanentSendError, RetryableSendError
from processors.channels.email import RawMail, SmtpSender
from schemas.settings import SmtpSettings
from streams.dev.smtp_sink import SmtpSink

from .helpers import make, read_eml, send, smtp_settings

pytestmark = pytest.mark.usefixtures("sink_pipelining")


def test_pipelining_is_used_exactly_when_offered(
    sink: SmtpSink, sink_pipelining: list[int], request: pytest.FixtureRequest
) -> None:
    send(smtp_settings(sink.port), *(make(f"p-{i}") for i in range(3)))
    expected = 3 if "pipelining" in request.node.callspec.id else 0
    assert (len(sink_pipelining), sink.received) == (expected, 3)


def test_raw_mail_arrives_byte_exact(sink: SmtpSink, mail_dir: Path) -> None:
    # Lines opening with dots (dot-stuffed on the wire, unstuffed by the server), a lone ".",
    # a bare CR, and no final line ending: the server must store what aiosmtplib would send.
    body = b"\n.\n.. two\n.leading\nbare\rcr\n\nlast"
    data = b"Message-ID: <raw-1@tidings.local>\nSubject: dots\n" + body
    mail = RawMail("<raw-1@tidings.local>", "notifications@tidings.local", "jane@example.com", data)

    async def go() -> str:
        async with SmtpSender(smtp_settings(sink.port)) as sender:
            return await sender.send_raw(mail)

    assert asyncio.run(go()) == "<raw-1@tidings.local>"
    stored = (mail_dir / "raw-1@tidings.local.eml").read_bytes()
    expected = data.replace(b"\r", b"\r\n").replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
    trace = b"X-MailFrom: notifications@tidings.local\r\nX-RcptTo: jane@example.com\r\n"
    assert stored == trace + expected + b"\r\n"


def test_message_arrives_with_both_parts_and_headers(sink: SmtpSink, mail_dir: Path) -> None:
    msg = make("order-42.jane", headers={"List-Unsubscribe": "<https://example.com/u>"})
    [provider_id] = send(smtp_settings(sink.port), msg)
    assert provider_id == "<order-42.jane@tidings.local>"
    got = read_eml(mail_dir / "order-42.jane@tidings.local.eml")
    assert got["Message-ID"] == provider_id
    assert got["X-Tidings-Notification-Id"] == "order-42.jane"
    assert got["X-MailFrom"] == "notifications@tidings.local"
    assert got["X-RcptTo"] == "jane@example.com"
    assert got["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = list(got.iter_parts())
    assert text.get_content().rstrip() == "Order 42 is on its way — ünïcödé"
    assert "<b>42</b>" in html.get_content()
    assert sink.stats().received == 1


@pytest.mark.parametrize("pool_size", [1, 4])
def test_sequential_sends_reuse_one_connection(sink: SmtpSink, pool_size: int) -> None:
    messages = [make(f"n-{i}") for i in range(5)]
    send(smtp_settings(sink.port), *messages, pool_size=pool_size)
    assert (sink.received, sink.stats().connections) == (5, 1)


def test_concurrent_sends_use_the_pool(sink: SmtpSink) -> None:
    async def go() -> list[str]:
        async with SmtpSender(smtp_settings(sink.port), pool_size=3) as sender:
            return await asyncio.gather(*(sender.send(make(f"c-{i}")) for i in range(12)))

    ids = asyncio.run(go())
    assert len(set(ids)) == 12
    assert sink.received == 12
    assert 1 <= sink.stats().connections <= 3


def test_reconnects_after_the_server_dropped_the_connection(mail_dir: Path) -> None:
    async def go() -> None:
        first = SmtpSink(mail_dir, port=0)
        first.start()
        port = first.port
        async with SmtpSender(smtp_settings(port), pool_size=1) as sender:
            try:
                await sender.send(make("before"))
            finally:
                first.stop()
            await asyncio.sleep(0.05)  # let the loop see the FIN from the stopped server
            with SmtpSink(mail_dir, port=port) as second:
                await sender.send(make("after"))
                assert second.received == 1

    asyncio.run(go())
    assert sorted(p.name for p in mail_dir.glob("*.eml")) == [
        "after@tidings.local.eml",
        "before@tidings.local.eml",
    ]


def test_duplicate_sends_are_counted_by_the_sink(sink: SmtpSink, mail_dir: Path) -> None:
    msg = make("dup-me")
    send(smtp_settings(sink.port), msg, msg, msg)
    assert (sink.received, sink.duplicates) == (3, 2)
    assert sorted(p.name for p in mail_dir.iterdir()) == [
        "dup-me@tidings.local.dup-1.eml",
        "dup-me@tidings.local.dup-2.eml",
        "dup-me@tidings.local.eml",
    ]


def test_550_at_data_is_permanent(mail_dir: Path) -> None:
    with SmtpSink(mail_dir, port=0, fail_with=(550, "5.7.1 Message refused")) as sink:
        with pytest.raises(PermanentSendError) as info:
            send(smtp_settings(sink.port), make())
        assert sink.rejected == 1
    assert info.value.code == "smtp_550"
    assert isinstance(info.value.__cause__, aiosmtplib.SMTPDataError)
    assert "5.7.1 Message refused" in str(info.value)


def test_451_at_data_is_retryable_and_the_connection_survives(mail_dir: Path) -> None:
    with SmtpSink(mail_dir, port=0, fail_with=(451, "4.3.0 Try again later")) as sink:

        async def go() -> str:
            async with SmtpSender(smtp_settings(sink.port), pool_size=1) as sender:
                with pytest.raises(RetryableSendError) as info:
                    await sender.send(make("a"))
                assert info.value.code == "smtp_451"
                assert info.value.retry_after_s is None
                sink.fail_with = None
                return await sender.send(make("b"))

        assert asyncio.run(go()) == "<b@tidings.local>"
        assert (sink.rejected, sink.received, sink.stats().connections) == (1, 1, 1)


@pytest.mark.parametrize(
    ("reply", "error"), [((550, "5.1.1 No such user"), PermanentSendError),
                         ((450, "4.2.1 Mailbox busy"), RetryableSendError)],
)  # fmt: skip
def test_refused_recipient(mail_dir: Path, reply: tuple[int, str], error: type[Exception]) -> None:
    with SmtpSink(mail_dir, port=0, fail_rcpt_with=reply) as sink, pytest.raises(error) as info:
        send(smtp_settings(sink.port), make())
    assert isinstance(info.value.__cause__, aiosmtplib.SMTPRecipientsRefused)
    assert reply[1] in str(info.value)


def test_connection_refused_is_retryable(free_port: int) -> None:
    with pytest.raises(RetryableSendError) as info:
        send(smtp_settings(free_port), make())
    assert info.value.code == "connect_failed"
    assert isinstance(info.value.__cause__, aiosmtplib.SMTPConnectError)


def test_timeout_is_retryable_and_the_next_send_reconnects(mail_dir: Path) -> None:
    with SmtpSink(mail_dir, port=0, delay_s=2.0) as sink:

        async def go() -> None:
            async with SmtpSender(smtp_settings(sink.port, timeout_s=0.3), pool_size=1) as sender:
                with pytest.raises(RetryableSendError) as info:
                    await sender.send(make("slow"))
                assert info.value.code == "timeout"
                assert isinstance(info.value.__cause__, aiosmtplib.SMTPTimeoutError)
                sink.delay_s = 0
                await sender.send(make("fast"))

        asyncio.run(go())
        # The timed-out session was not reused: its protocol state was unknown.
        assert (sink.received, sink.stats().connections) == (1, 2)


def test_cancelled_send_does_not_poison_the_pool(mail_dir: Path) -> None:
    with SmtpSink(mail_dir, port=0, delay_s=5.0) as sink:

        async def go() -> None:
            async with SmtpSender(smtp_settings(sink.port), pool_size=1) as sender:
                task = asyncio.create_task(sender.send(make("cancelled")))
                await asyncio.sleep(0.2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                sink.delay_s = 0
                await sender.send(make("next"))

        asyncio.run(go())
        assert (sink.received, sink.stats().connections) == (1, 2)


def test_connection_is_renewed_after_max_per_connection(sink: SmtpSink) -> None:
    messages = [make(f"m-{i}") for i in range(5)]
    send(smtp_settings(sink.port), *messages, pool_size=1, max_per_connection=2)
    assert (sink.received, sink.stats().connections) == (5, 3)


def test_pool_sends_concurrently(mail_dir: Path) -> None:
    with SmtpSink(mail_dir, port=0, delay_s=0.3) as sink:

        async def go() -> float:
            async with SmtpSender(smtp_settings(sink.port), pool_size=4) as sender:
                started = asyncio.get_running_loop().time()
                await asyncio.gather(*(sender.send(make(f"p-{i}")) for i in range(4)))
                return asyncio.get_running_loop().time() - started

        elapsed = asyncio.run(go())
        assert sink.received == 4
    assert elapsed < 0.9, f"4 sends of 0.3 s each took {elapsed:.2f}s: not concurrent"


def test_send_after_close_is_refused(sink: SmtpSink) -> None:
    async def go() -> None:
        sender = SmtpSender(smtp_settings(sink.port))
        await sender.send(make())
        await sender.close()
        await sender.close()  # idempotent
        with pytest.raises(RuntimeError):
            await sender.send(make("late"))

    asyncio.run(go())


def test_constructor_validates_and_connects_nothing(free_port: int) -> None:
    with pytest.raises(ValueError, match="choose one"):
        SmtpSender(SmtpSettings(use_tls=True, starttls=True))
    with pytest.raises(ValueError):
        SmtpSender(SmtpSettings(), pool_size=0)
    SmtpSender(smtp_settings(free_port))  # nothing listens there, and nothing fails


def test_message_without_single_recipient_is_permanent(sink: SmtpSink) -> None:
    msg = make()
    del msg["To"]
    with pytest.raises(PermanentSendError) as info:
        send(smtp_settings(sink.port), msg)
    assert info.value.code == "invalid_message"
