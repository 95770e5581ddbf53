"""What a recipient may hold: text Postgres can store. A NUL anywhere is refused when the
record is built (by the gateway, the CLI import, the recipients stage), naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas.recipient import Recipient


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"id": "u\x00"}, "id"),
        ({"tenant": "t\x00"}, "tenant"),
        ({"email": "a\x00@x.io"}, "email"),
        ({"phone": "+43\x00"}, "phone"),
        ({"locale": "de\x00"}, "locale"),
        ({"timezone": "Europe/Vienna\x00"}, "timezone"),
        ({"attributes": {"plan\x00": "pro"}}, "attributes"),
        ({"attributes": {"plan": "pro\x00"}}, "attributes"),
        ({"attributes": {"deep": {"list": ["x", "y\x00"]}}}, "attributes"),
        ({"addresses": ({"channel": "push", "address": "t\x00", "platform": "fcm"},)},
         "addresses.0.address"),
        ({"addresses": ({"channel": "push", "address": "t", "app_id": "a\x00"},)},
         "addresses.0.app_id"),
    ],
)  # fmt: skip
def test_a_nul_is_refused_naming_the_field(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        Recipient.model_validate({"id": "u1", **fields})
    err = info.value.errors()[0]
    assert ".".join(str(p) for p in err["loc"]) == where
    assert "NUL" in err["msg"]


def test_ordinary_text_is_kept_as_it_is() -> None:
    r = Recipient(tenant="acme", id="ü-1 \\x00", email="a@x.io", locale="de-AT",
                  attributes={"note": "tab\there", "n": 1})  # fmt: skip
    assert (r.id, r.attributes["note"]) == ("ü-1 \\x00", "tab\there")
