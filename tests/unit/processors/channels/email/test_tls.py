"""SmtpSender with STARTTLS and AUTH against the sink, using a throwaway self-signed cert."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from processors import RetryableSendError
from streams.dev.smtp_sink import SmtpSink

from .helpers import make, send, smtp_settings

# Pipelining swaps the protocol of a TLS transport too: run both paths (see sink_pipelining).
pytestmark = pytest.mark.usefixtures("sink_pipelining")


def trusting(cert: Path) -> ssl.SSLContext:
    """A client context that trusts exactly the throwaway certificate."""
    return ssl.create_default_context(cafile=str(cert))


def test_starttls_and_auth(
    mail_dir: Path,
    tls_files: tuple[Path, Path],
    sink_pipelining: list[int],
    request: pytest.FixtureRequest,
) -> None:
    cert, key = tls_files
    creds = {"tidings": "s3cret"}
    with SmtpSink(mail_dir, port=0, tls_cert=cert, tls_key=key, credentials=creds) as sink:
        # The sink refuses MAIL before STARTTLS and AUTH, so acceptance proves both happened.
        settings = smtp_settings(sink.port, starttls=True, username="tidings", password="s3cret")
        send(settings, make("tls-1"), tls_context=trusting(cert))
        assert sink.received == 1

        bad = smtp_settings(sink.port, starttls=True, username="tidings", password="nope")
        with pytest.raises(RetryableSendError) as info:
            send(bad, make("tls-2"), tls_context=trusting(cert))
        assert info.value.code == "smtp_auth_failed"

        # Default validation against the system store must refuse the self-signed cert...
        with pytest.raises(RetryableSendError) as info:
            send(settings, make("tls-3"))
        assert info.value.code == "tls_failed"
        assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)

        # ...unless validation is switched off explicitly.
        send(settings.model_copy(update={"validate_certs": False}), make("tls-4"))

        with pytest.raises(RetryableSendError) as info:
            send(smtp_settings(sink.port), make("tls-5"))  # no STARTTLS at all
        assert info.value.code == "smtp_auth_required"
        assert sink.received == 2
    # Over TLS, the two delivered mails went through the pipelined path when it was offered.
    assert len(sink_pipelining) == (3 if "pipelining" in request.node.callspec.id else 0)


def test_auth_required_but_not_configured_is_retryable(
    mail_dir: Path, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    sink = SmtpSink(mail_dir, port=0, tls_cert=cert, tls_key=key, credentials={"u": "p"})
    with sink, pytest.raises(RetryableSendError) as info:
        send(smtp_settings(sink.port, starttls=True), make(), tls_context=trusting(cert))
    assert info.value.code == "smtp_auth_required"
