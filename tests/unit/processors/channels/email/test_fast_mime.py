"""fast_mime: the bytes of a plain notification mail, parsed back by the stdlib."""

from __future__ import annotations

import email
from email import policy
from typing import Any

from processors.channels.email.mime import fast_mime


def _mail(nid: str = "6f1b2a52-8e55-4c1e-9c43-1d7f3f2f6a10", **kw: Any) -> bytes:
    args: dict[str, Any] = {
        "notification_id": nid, "from_header": "Tidings <n@example.com>",
        "from_addr": "n@example.com", "to": "a@example.com", "subject": "Hi",
        "html": "<p>Hello</p>", "text": "Hello", "message_id_domain": "example.com",
    } | kw  # fmt: skip
    raw = fast_mime(**args)
    assert raw is not None
    return raw.data


def test_a_resend_is_the_same_bytes_but_for_the_date() -> None:
    a, b = _mail(), _mail()
    strip = [ln for ln in a.split(b"\n") if not ln.startswith(b"Date: ")]
    assert strip == [ln for ln in b.split(b"\n") if not ln.startswith(b"Date: ")]
    assert _mail(nid="other") != a


def test_the_boundary_never_occurs_in_the_parts_even_when_the_text_names_it() -> None:
    first = email.message_from_bytes(_mail(), policy=policy.default)
    boundary = first.get_boundary()
    assert boundary is not None and boundary.startswith("=_tidings_")
    # A body that quotes the very boundary: quoted-printable writes its "=" as "=3D".
    data = _mail(text=f"--{boundary}\nboom", html=f"<p>--{boundary}--</p>")
    msg = email.message_from_bytes(data, policy=policy.default)
    parts = [p.get_content() for p in msg.iter_parts()]
    assert parts[0].startswith(f"--{boundary}") and parts[1].startswith(f"<p>--{boundary}--")
    assert data.count(f"--{boundary}".encode()) == 3  # two part openings and the close


def test_the_date_header_parses_and_is_now() -> None:
    import time
    from email.utils import parsedate_to_datetime

    msg = email.message_from_bytes(_mail(), policy=policy.default)
    assert abs(parsedate_to_datetime(str(msg["Date"])).timestamp() - time.time()) < 5
