"""The development SMTP sink: storage, duplicate accounting, failure knobs, standalone mode."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from streams.dev.smtp_sink import SmtpSink, main, safe_name

ROOT = Path(__file__).resolve().parents[4]


def raw_send(port: int, message_id: str | None, body: str = "hi") -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    msg["Subject"] = "s"
    if message_id is not None:
        msg["Message-ID"] = message_id
    msg.set_content(body)
    asyncio.run(aiosmtplib.send(msg, hostname="127.0.0.1", port=port, local_hostname="t.local"))


def test_safe_name_strips_path_tricks_and_bounds_length() -> None:
    assert safe_name("<abc.123@tidings.local>") == "abc.123@tidings.local"
    assert safe_name("<../../etc/passwd>") == "_.._etc_passwd"
    assert "/" not in safe_name("<a/b\\c@d>") and "\\" not in safe_name("<a/b\\c@d>")
    long_a, long_b = "<" + "a" * 300 + "1@x>", "<" + "a" * 300 + "2@x>"
    assert len(safe_name(long_a)) < 200
    assert safe_name(long_a) != safe_name(long_b)


def test_port_zero_reports_the_bound_port(mail_dir: Path) -> None:
    with SmtpSink(mail_dir, port=0) as sink:
        assert sink.port > 0
        raw_send(sink.port, "<p@x>")
        assert sink.received == 1
    assert sink.stats().received == 1  # counters stay readable after stop()


def test_duplicates_are_kept_and_counted_across_restarts(mail_dir: Path) -> None:
    with SmtpSink(mail_dir, port=0) as sink:
        raw_send(sink.port, "<same@x>", "first")
        raw_send(sink.port, "<same@x>", "second")
        assert (sink.received, sink.duplicates) == (2, 1)
    # A new sink on the same directory still sees the earlier copies.
    with SmtpSink(mail_dir, port=0) as sink:
        raw_send(sink.port, "<same@x>", "third")
        assert (sink.received, sink.duplicates) == (1, 1)
    assert "first" in (mail_dir / "same@x.eml").read_text()
    assert "second" in (mail_dir / "same@x.dup-1.eml").read_text()
    assert "third" in (mail_dir / "same@x.dup-2.eml").read_text()
    assert not list(mail_dir.glob("*.tmp")) and not list(mail_dir.glob(".*"))


def test_messages_without_message_id_never_count_as_duplicates(mail_dir: Path) -> None:
    with SmtpSink(mail_dir, port=0) as sink:
        raw_send(sink.port, None)
        raw_send(sink.port, None)
        assert (sink.received, sink.duplicates) == (2, 0)
    assert len(list(mail_dir.glob("no-message-id-*.eml"))) == 2


def test_fail_with_rejects_and_counts(mail_dir: Path) -> None:
    with SmtpSink(mail_dir, port=0, fail_with=(554, "5.6.0 nope")) as sink:
        with pytest.raises(aiosmtplib.SMTPDataError) as info:
            raw_send(sink.port, "<r@x>")
        assert info.value.code == 554
        assert (sink.received, sink.rejected) == (0, 1)
    assert not list(mail_dir.iterdir())


def test_delay_slows_each_message(mail_dir: Path) -> None:
    with SmtpSink(mail_dir, port=0, delay_s=0.3) as sink:
        started = time.monotonic()
        raw_send(sink.port, "<d@x>")
        assert time.monotonic() - started >= 0.29


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fail_with": (250, "ok")},
        {"fail_rcpt_with": (600, "x")},
        {"tls_cert": "c.pem"},
        {"credentials": {"u": "p"}},
    ],
)
def test_bad_configuration_is_refused(mail_dir: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SmtpSink(mail_dir, **kwargs)  # type: ignore[arg-type]


def test_busy_port_fails_fast(mail_dir: Path) -> None:
    with SmtpSink(mail_dir, port=0) as first:
        started = time.monotonic()
        with pytest.raises(OSError, match="busy"):
            SmtpSink(mail_dir, port=first.port).start()
        assert time.monotonic() - started < 2


def test_main_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--fail-with", "soon"])
    assert info.value.code == 2
    assert "CODE:TEXT" in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_standalone_runs_until_signal_and_exits_0(
    tmp_path: Path, free_port: int, sig: signal.Signals
) -> None:
    port = free_port
    out_dir = tmp_path / "mail"
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", "-m", "streams.dev.smtp_sink",
         "--port", str(port), "--dir", str(out_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "listening on 127.0.0.1" in proc.stdout.readline()
        raw_send(port, "<standalone@x>")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "1 received, 0 duplicates" in out
    assert (out_dir / "standalone@x.eml").is_file()
