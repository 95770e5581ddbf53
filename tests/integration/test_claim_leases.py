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
from streams.state import ClaimStore, DeliveryLog
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


class _HolderReturns(ClaimStore):
    """A claimant during whose takeover the holder comes back: between the member check
    (its key gone) and the compare-and-set, it beats again and renews its lease."""

    holder: ClaimStore
    holder_token: str

    async def _claim_once(self, nid: str, token: str, gone: str) -> list[str]:
        if gone:
            await self.holder.beat()
            assert await self.holder.extend({nid: self.holder_token}) == []
        return await super()._claim_once(nid, token, gone)


def test_a_dead_members_claim_is_taken_in_two_steps_only_while_unchanged(
    settings: TidingsSettings, redis_client: redis.Redis
) -> None:
    """The claim script touches the claim key alone: the holder's liveness key is checked by
    the client, and the takeover is a compare-and-set of the claim value it saw."""
    url = settings.redis.url.get_secret_value()

    def store(cls: type[ClaimStore] = ClaimStore) -> ClaimStore:
        log = DeliveryLog(settings.postgres.conninfo())
        return cls(url, log, lease_s=30, ttl_s=60, member_ttl_s=30)

    async def scenario() -> None:
        holder, claimant, racer = store(), store(), store(_HolderReturns)
        assert isinstance(racer, _HolderReturns)
        nid, nid2 = str(uuid.uuid4()), str(uuid.uuid4())
        try:
            await holder.beat()
            mine = await holder.claim(nid)
            assert mine.state == "ours"
            assert (await claimant.claim(nid)).state == "busy", "a live member's is waited out"

            # The holder dies: its liveness key is gone long before its 30 s lease ends.
            redis_client.delete(f"tidings:member:{holder.member}")
            took = await claimant.claim(nid)
            assert (took.state, took.previous_member) == ("taken", holder.member)
            value = (redis_client.get(f"tidings:claim:{nid}") or b"").decode()
            assert value.startswith(f"sending|{took.token}|") and value.endswith(claimant.member)
            assert await holder.extend({nid: mine.token}) == [nid], "the dead holder lost it"

            # A holder back between the member check and the takeover keeps its claim: the
            # value the check saw has changed, and the live member is waited out again.
            held = await holder.claim(nid2)
            redis_client.delete(f"tidings:member:{holder.member}")
            racer.holder, racer.holder_token = holder, held.token
            assert (await racer.claim(nid2)).state == "busy"
            value = (redis_client.get(f"tidings:claim:{nid2}") or b"").decode()
            assert value.startswith(f"sending|{held.token}|") and value.endswith(holder.member)
            assert await holder.extend({nid2: held.token}) == []
        finally:
            for s in (holder, claimant, racer):
                await s.close()
            redis_client.delete(f"tidings:claim:{nid}", f"tidings:claim:{nid2}")

    asyncio.run(scenario())


def test_an_abandoned_claim_is_taken_over_again_at_once_by_a_live_member(
    settings: TidingsSettings,
) -> None:
    # The `skip` policy marks a taken-over send `unknown` and abandons the claim: a redo
    # of that batch must see the same ambiguity at once, not wait out a 30 s lease.
    async def scenario() -> tuple[str, str, str, str]:
        log = DeliveryLog(settings.postgres.conninfo())
        claims = ClaimStore(settings.redis.url.get_secret_value(), log, lease_s=30, ttl_s=60)
        nid = str(uuid.uuid4())
        try:
            await claims.beat()
            first = await claims.claim(nid)
            held = (await claims.claim(nid)).state  # our own live lease: busy
            await claims.abandon(nid, "someone-elses-token")  # not ours: no effect
            still = (await claims.claim(nid)).state
            await claims.abandon(nid, first.token)
            again = await claims.claim(nid)
            return first.state, held, still, again.state
        finally:
            await claims.close()

    first, held, still, again = asyncio.run(scenario())
    assert (first, held, still) == ("ours", "busy", "busy")
    assert again == "taken", "a redo sees the ambiguous claim as a takeover, at once"
