"""Fast MIME for the common case: build a notification email's bytes directly.

The stdlib `email` package parses every header through its header registry;
profiling the deliver stage showed that as ~70% of its CPU. Notification mail
has a fixed shape (one From, one plain To, a subject, text + optional HTML), so
this module writes the bytes itself. Anything outside the fast path (non-ASCII
or unusual addresses, extra headers) returns None and the caller uses
`build_message`, which validates with the stdlib parser.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime

__all__ = ["RawMail", "fast_mime"]

# A plain ASCII addr-spec: dot-atom local part, a dotted hostname of LDH labels.
_PLAIN_ADDR = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+\Z"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


class RawMail:
    """A ready-to-send message: envelope plus bytes."""

    __slots__ = ("data", "message_id", "recipient", "sender")

    def __init__(self, message_id: str, sender: str, recipient: str, data: bytes) -> None:
        self.message_id = message_id
        self.sender = sender
        self.recipient = recipient
        self.data = data


_date: tuple[int, str] = (-1, "")  # (a second, its Date value), swapped whole (threads)


def _date_now() -> str:
    """The RFC 5322 date of now (UTC, to the second), formatted once per second."""
    global _date
    sec = int(time.time())
    if _date[0] != sec:
        _date = (sec, format_datetime(datetime.fromtimestamp(sec, UTC)))
    return _date[1]


def _subject(subject: str) -> str:
    flat = " ".join(_CONTROL.sub(" ", subject).split())
    if flat.isascii() and len(flat) < 900:
        return flat
    return Header(flat, "utf-8").encode(maxlinelen=76)


def _qp(text: str) -> bytes:
    # binascii.b2a_qp is C: quoted-printable, lines ≤ 76, trailing whitespace encoded.
    return binascii.b2a_qp(text.replace("\r\n", "\n").encode("utf-8"), istext=True)


def fast_mime(
    *,
    notification_id: str,
    from_header: str,
    from_addr: str,
    to: str,
    subject: str,
    html: str | None,
    text: str,
    message_id_domain: str,
    headers: Sequence[tuple[str, str]] = (),
) -> RawMail | None:
    """Bytes of a text(+HTML) notification mail, or None when `to` needs the full parser.

    Pure and non-blocking. `from_header`/`from_addr` must already be validated; `headers`
    are extra fields tidings itself made (ASCII, no line breaks: not checked here).
    """
    if not _PLAIN_ADDR.match(to) or len(to) > 254:
        return None
    message_id = f"<{notification_id}@{message_id_domain}>"
    # "=_" never occurs in quoted-printable text (QP writes "=" as "=3D"), so a boundary
    # derived from the id is safe, and a resend of the notification is the same bytes.
    boundary = f"=_tidings_{hashlib.blake2s(notification_id.encode(), digest_size=12).hexdigest()}"
    head = (
        f"From: {from_header}\n"
        f"To: {to}\n"
        f"Subject: {_subject(subject)}\n"
        f"Date: {_date_now()}\n"
        f"Message-ID: {message_id}\n"
        f"X-Tidings-Notification-Id: {notification_id}\n"
        "Auto-Submitted: auto-generated\n"
        + "".join(f"{name}: {value}\n" for name, value in headers)
        + "MIME-Version: 1.0\n"
    )
    text_part = (
        b'Content-Type: text/plain; charset="utf-8"\n'
        b"Content-Transfer-Encoding: quoted-printable\n\n" + _qp(text) + b"\n"
    )
    if html is None:
        data = head.encode() + text_part
    else:
        b = boundary.encode()
        data = (
            head.encode()
            + b'Content-Type: multipart/alternative; boundary="' + b + b'"\n\n'
            + b"--" + b + b"\n" + text_part
            + b"--" + b + b"\n"
            + b'Content-Type: text/html; charset="utf-8"\n'
            + b"Content-Transfer-Encoding: quoted-printable\n\n" + _qp(html) + b"\n"
            + b"--" + b + b"--\n"
        )  # fmt: skip
    return RawMail(message_id, from_addr, to, data)
