"""Presence keys: the gateway writes what route reads; Redis away reads as nobody online."""

from __future__ import annotations

from streams.http.gateway import RecipientIdentity, room_of
from streams.state.presence import PRESENCE_PREFIX, PresenceReader, presence_key


def test_the_gateway_and_route_spell_a_recipients_presence_key_alike() -> None:
    for tenant, rid in (("acme", "u1"), ("", "u1"), ("a:b", "c"), ("a", "b:c"), ("t", '"x"')):
        room = room_of(RecipientIdentity(tenant, rid))
        assert presence_key(tenant, rid) == PRESENCE_PREFIX + room
    assert presence_key("a:b", "c") != presence_key("a", "b:c"), "no name spells another's"


def test_redis_away_reads_as_nobody_online() -> None:
    reader = PresenceReader("redis://127.0.0.1:1/0", timeout_s=0.2)  # nothing listens on port 1
    try:
        assert reader.online({("acme", "u1")}) == set()
        assert reader.online(set()) == set()
    finally:
        reader.close()
