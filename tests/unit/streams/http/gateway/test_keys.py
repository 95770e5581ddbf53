"""API keys: format, digest, scopes, verification (streams/http/gateway/keys.py); pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.http.gateway.keys import check_scopes, issue_key, parse_key, secret_digest, verify


def test_an_issued_key_parses_back_and_verifies() -> None:
    issued = issue_key("acme", ("events:write",), "ci")
    parsed = parse_key(issued.text)
    assert parsed is not None and parsed[0] == issued.key.prefix
    assert verify(issued.key, parsed[1])
    assert issued.key.secret_sha256 == secret_digest(parsed[1])
    assert issued.key.tenant == "acme" and issued.key.name == "ci"
    assert parsed[1] not in repr(issued.key), "the stored key holds no secret"


def test_two_keys_differ() -> None:
    a, b = issue_key("t", ("admin",)), issue_key("t", ("admin",))
    assert a.text != b.text and a.key.prefix != b.key.prefix


def test_a_wrong_secret_or_a_revoked_key_does_not_verify() -> None:
    issued = issue_key("acme", ("events:write",))
    _, secret = parse_key(issued.text) or ("", "")
    wrong = ("A" if secret[0] != "A" else "B") + secret[1:]
    assert not verify(issued.key, wrong)
    revoked = issued.key.__class__(**{**{f: getattr(issued.key, f) for f in issued.key.__slots__},
                                      "revoked_at": datetime.now(UTC)})  # fmt: skip
    assert not verify(revoked, secret)
    assert not verify(None, secret)


@pytest.mark.parametrize(
    "text",
    ["", "tdk_", "tdk_0123456789ab_short", "xyz_0123456789ab_" + "a" * 43,
     "tdk_0123456789AB_" + "a" * 43, "tdk_0123456789ab_" + "a" * 44],
)  # fmt: skip
def test_malformed_keys_are_not_parsed(text: str) -> None:
    assert parse_key(text) is None


def test_scopes_are_checked_sorted_and_deduplicated() -> None:
    assert check_scopes(("inbox:admin", "events:write", "inbox:admin")) == (
        "events:write", "inbox:admin",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown scope\(s\) fly: use events:write"):
        check_scopes(("fly",))
    with pytest.raises(ValueError, match="at least one scope"):
        check_scopes(())


def test_admin_allows_everything_and_a_scope_only_itself() -> None:
    assert issue_key("t", ("admin",)).key.allows("recipients:write")
    k = issue_key("t", ("events:write",)).key
    assert k.allows("events:write") and not k.allows("recipients:write")
