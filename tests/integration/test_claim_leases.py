"""Claim leases on the real Redis: renewed while a send runs, lost only when renewal stops; and
the deliver stage renews the claims of sends that outlast the lease."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from schemas.settings import TidingsSettings
from streams.dedup import ClaimStore, DeliveryLog
from tests.integration.pipeline import World, wait_until

pytestmark = pytest.mark.integration


def test_a_renewed_lease_is_never_taken_and_a_lapsed_one_is(settings: TidingsSettings) -> None:
    async def scenario() -> tuple[list[str], list[str], str, str]:
        log = DeliveryLog(settings.postgres.conninfo())
        claims = ClaimStore(settings.redis.url.get_secret_value(), log, lease_s=0.3, ttl_s=60)
        nid = str(uuid.uuid4())
        try:
            await claims.beat()  # a live member: its claims are waited out while leased
            mine = await claims.claim(nid)
            assert mine.state == "ours"
            seen = []
            for _ in range(10):  # 1 s, more than three leases
                await asyncio.sleep(0.1)
                assert await claims.extend({nid: mine.token}) == []
                seen.append((await claims.claim(nid)).state)
            lost = await claims.extend({nid: "not-the-token"})
            await asyncio.sleep(0.4)  # no renewal: the lease lapses
            after = (await claims.claim(nid)).state
            gone = await claims.extend({nid: mine.token})  # the new holder's now
            return seen, lost, after, gone[0] if gone else ""
        finally:
            await claims.close()

    seen, lost, after, gone = asyncio.run(scenario())
    assert set(seen) == {"busy"}, "another claimant waits while the lease is renewed"
    assert lost and after == "taken" and gone


def test_the_deliver_stage_renews_claims_of_sends_slower_than_the_lease(
    make_world_with: Callable[..., World],
) -> None:
    # Each mail takes 2.5 s at the sink, the lease is 0.9 s: without renewal every claim would
    # lapse mid-send (and be open to a takeover after a rebalance).
    w = make_world_with(runtime={"claim_lease_s": 0.9}, sink_delay_s=2.5)
    expected = w.send([(w.order_event(i), "structured") for i in range(4)])
    r = redis.Redis.from_url(w.settings.redis.url.get_secret_value())

    def in_progress() -> dict[str, float]:
        """Lease deadline minus now (ms) of every claim still being sent."""
        now_ms = time.time() * 1000
        out = {}
        for nid in expected:
            v = r.get(f"tidings:claim:{nid}")
            if v and v.startswith(b"sending|"):
                out[nid] = float(v.split(b"|")[2]) - now_ms  # sending|token|deadline|member
        return out

    try:
        with w.pipeline():
            wait_until(lambda: len(in_progress()) == 4, 30, "all four sends under way")
            time.sleep(1.4)  # past the first lease: what is leased now was renewed
            left = in_progress()
            got = w.wait_mail(4, timeout_s=60)
    finally:
        r.close()
    assert len(left) == 4, "the sends were still running"
    assert all(ms > 0 for ms in left.values()), f"a lease lapsed mid-send: {left}"
    assert got == Counter({nid: 1 for nid in expected})


def test_a_dead_members_claim_is_taken_at_once_a_live_ones_is_not(
    settings: TidingsSettings,
) -> None:
    """Fast takeover: a claim names its member; once the member's liveness key is gone
    (its process died), the claim is taken although its 30 s lease has not lapsed."""

    async def scenario() -> tuple[str, str, str, str]:
        url = settings.redis.url.get_secret_value()
        stores = [
            ClaimStore(
                url, DeliveryLog(settings.postgres.conninfo()), lease_s=30, ttl_s=60, member_ttl_s=2
            )
            for _ in range(2)
        ]
        dead, alive = stores
        nid = str(uuid.uuid4())
        try:
            await dead.beat()
            await alive.beat()
            assert (await dead.claim(nid)).state == "ours"
            while_alive = (await alive.claim(nid)).state
            # The holder dies: nothing renews its liveness key, which expires within 2 s.
            await asyncio.sleep(2.3)
            after_death = await alive.claim(nid)
            # A restarted incarnation of a member slot retires its predecessor at once.
            slot = f"test-slot-{uuid.uuid4().hex}"
            assert await dead.succeed(slot) == ""
            nid2 = str(uuid.uuid4())
            await dead.beat()
            assert (await dead.claim(nid2)).state == "ours"
            assert await alive.succeed(slot) == dead.member
            after_handover = (await alive.claim(nid2)).state
            return while_alive, after_death.state, after_death.previous_member, after_handover
        finally:
            for s in stores:
                await s.close()

    while_alive, after_death, previous, after_handover = asyncio.run(scenario())
    assert while_alive == "busy"
    assert after_death == "taken" and previous
    assert after_handover == "taken"
