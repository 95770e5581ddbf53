"""Provider chains are built from settings; nothing connects while building."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from processors.failover import Failover
from processors.registry import build_providers
from schemas.settings import TidingsSettings


def test_defaults_give_email_from_smtp_settings_and_the_inbox() -> None:
    providers = build_providers(TidingsSettings())
    assert sorted(providers) == ["email", "inapp"]
    email = providers["email"]
    assert isinstance(email, Failover)
    assert [p.name for p in email.providers] == ["smtp"]


def test_a_chain_per_channel_in_order() -> None:
    s = TidingsSettings(
        channels={
            "email": [{"kind": "smtp", "name": "a"}, {"kind": "smtp", "name": "b", "port": 2}],
            "webhook": [{"kind": "webhook", "secrets": ["whsec_" + "A" * 32]}],
            "slack": [{"kind": "slack"}],
        }
    )
    providers = build_providers(s)
    assert sorted(providers) == ["email", "inapp", "slack", "webhook"]
    chain = providers["email"]
    assert isinstance(chain, Failover)
    assert [p.name for p in chain.providers] == ["a", "b"]


def test_unknown_kind_and_wrong_channel_are_refused() -> None:
    with pytest.raises(ValidationError, match="kind"):
        TidingsSettings(channels={"email": [{"kind": "carrier-pigeon"}]})
    s = TidingsSettings(channels={"email": [{"kind": "slack"}]})
    with pytest.raises(ValueError, match="serves channel 'slack', not 'email'"):
        build_providers(s)
