"""TwilioSmsProvider against Stoplight Prism serving Twilio's own OpenAPI (twilio_api_v2010.json).

Prism validates every request against Twilio's spec (path, Basic auth, required form fields) and
answers 201 with Twilio's example message only when the request conforms; a non-conforming
request gets 401/422. The form itself is checked field by field against a recording server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from pydantic import SecretStr

from processors.channels.sms import TwilioSmsProvider
from processors.exceptions import PermanentSendError
from processors.http import SafeHttp
from schemas.content import SmsContent
from tests.peers.http_server import HttpPeer, Reply
from tests.peers.npm import prism_twilio
from tests.unit.processors.fakes import notification

ACCOUNT = "AC" + "a" * 32


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with prism_twilio(tmp_path_factory.mktemp("prism") / "prism.log") as url:
        yield url


def provider(base: str, **kw: object) -> TwilioSmsProvider:
    args: dict[str, object] = {
        "account_sid": ACCOUNT, "auth_token": SecretStr("token"), "from_number": "+15005550006",
        "base_url": base, "http": SafeHttp(allow=("127.0.0.0/8",), allow_http=True),
        "status_callback_url": "https://tidings.example.com/callbacks/twilio/twilio",
    }  # fmt: skip
    args.update(kw)
    return TwilioSmsProvider(**args)  # type: ignore[arg-type]


def send(p: TwilioSmsProvider, text: str = "Order 42 shipped", to: str = "+14155552345") -> str:
    async def go() -> str:
        try:
            return await p.send(notification(recipient=to), SmsContent(text=text))
        finally:
            await p.close()

    return asyncio.run(go())


def test_send_conforms_to_twilios_openapi(prism: str) -> None:
    assert send(provider(prism)) == "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"


def test_messaging_service_variant_conforms(prism: str) -> None:
    p = provider(prism, from_number=None, messaging_service_sid="MG" + "b" * 32)
    assert send(p).startswith("SM")


def test_prism_refuses_what_twilio_would_refuse(prism: str) -> None:
    # Twilio's spec says AccountSid matches ^AC[0-9a-fA-F]{32}$: Prism answers 422 → permanent.
    p = provider(prism, account_sid="AC" + "g" * 32)
    with pytest.raises(PermanentSendError, match="HTTP 422") as info:
        send(p)
    assert info.value.code == "http_422"


def test_form_fields_and_auth_field_by_field() -> None:
    reply = Reply(201, {"Content-Type": "application/json"}, b'{"sid": "SM123"}')
    with HttpPeer() as peer:
        peer.default = reply
        assert send(provider(peer.url), text="Grüße 👋") == "SM123"
    [req] = peer.requests
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert req.headers["authorization"].startswith("Basic ")
    form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
    assert form == {
        "To": "+14155552345",
        "From": "+15005550006",
        "Body": "Grüße 👋",
        # The notification id rides in the callback URL, so the receipt can be correlated.
        "StatusCallback": "https://tidings.example.com/callbacks/twilio/twilio?nid=n-1",
    }


def test_unreachable_number_is_permanent(tmp_path: Path) -> None:
    body = b'{"code": 21211, "message": "Invalid To", "more_info": "x", "status": 400}'
    with HttpPeer() as peer:
        peer.default = Reply(400, {"Content-Type": "application/json"}, body)
        with pytest.raises(PermanentSendError, match="cannot get SMS") as info:
            send(provider(peer.url))
    assert info.value.code == "twilio_21211"
