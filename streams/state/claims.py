"""Send claims: at most one send per notification, across processes, crashes and Redis loss.

Before a send, a worker takes a claim in Redis (a Lua script:
`sending|token|deadline|member`). After the provider accepts, the send is recorded
in Postgres (`deliveries`) and Redis (`sent|…`) at once; Postgres is the record, Redis
the fast path. A redelivered notification finds the claim (or, when Redis has lost
its memory, the Postgres row) and is not sent again.

Only the token holder may send or release a claim, so a worker that lost its
partition mid-send can't race the new owner. Each deliver process keeps a liveness
key (`…member:<incarnation>`, a short TTL renewed every second): a claim whose member
is gone was held by a dead process and is taken over at once; a live member's claim
is waited out (its lease is renewed while it sends).

Postgres or Redis unreachable raises `DependencyDown`: the caller keeps the work and
tries again (`streams.runtime.outage`), it never exits for it. A login Postgres refuses (wrong
credentials, no such database) is a setting to fix, not an outage: `FatalStageError`.

The Postgres half is `streams.state.deliveries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from processors.coalesce import Coalescer
from processors.redis_pack import fast_pool
from streams.exceptions import DependencyDown
from streams.state.deliveries import DeliveryLog, SentRecord

__all__ = ["Claim", "ClaimStore"]

log = logging.getLogger(__name__)

# The claim value keeps its lease deadline, and the key outlives the lease, so a
# worker that finds an expired lease knows a sender died mid-send ("taken").
# Time comes from the Redis server, so workers' clocks don't matter.
# A claim whose member's liveness key is gone belongs to a dead process: taken at once. The
# script touches its one key only (Redis Cluster: every key a script touches is in KEYS, and
# in one slot; a member key is in another): a claim leased to a named member comes back as
# `held` with that member, and the client, having found the member's key gone, calls it again
# with the claim value it saw (ARGV[5]), which it takes over only while still unchanged.
# A claim that already carries the caller's token is the caller's: a retry after a reply
# lost on the wire (Redis failing mid-batch) gets it back instead of waiting out its own lease.
# ARGV: token, lease ms, ttl s, our member id, the value of a claim whose member is gone ('').
_CLAIM = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('get', KEYS[1])
local mine = 'sending|' .. ARGV[1] .. '|' .. (now + tonumber(ARGV[2])) .. '|' .. ARGV[4]
local again = 'sending|' .. ARGV[1] .. '|'
if not v or string.sub(v, 1, string.len(again)) == again then
  redis.call('set', KEYS[1], mine, 'EX', ARGV[3])
  return {'ours', ''}
end
if string.sub(v, 1, 5) == 'sent|' then return {'sent', v} end
local _, _, deadline, member = string.find(v, '^sending|[^|]*|(%d+)|?(.*)$')
deadline = tonumber(deadline or '0')
if deadline <= now or (ARGV[5] ~= '' and v == ARGV[5]) then
  redis.call('set', KEYS[1], mine, 'EX', ARGV[3])
  return {'taken', member or ''}
end
if member ~= nil and member ~= '' then return {'held', tostring(deadline - now), member, v} end
return {'busy', tostring(deadline - now)}
"""

# How often a claim is looked at again when its value changes between the member check and
# the takeover (another worker took it, or its holder renewed it meanwhile).
_TAKEOVER_TRIES = 3

# A new incarnation of a member slot retires the previous one's liveness key at once: that
# process is dead (it held the slot's lock), so its claims need not wait for the key's TTL.
# The script touches the slot key only; the client deletes the old member key it returns.
_SUCCEED = """
local old = redis.call('getset', KEYS[1], ARGV[1])
redis.call('expire', KEYS[1], ARGV[2])
return old or ''
"""

# Push a claim's lease deadline forward, only while it is still the caller's (same token).
_EXTEND = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('get', KEYS[1])
-- Recorded as sent meanwhile (by its holder, just before it lets the lease go): not lost.
if v and string.sub(v, 1, 5) == 'sent|' then return 1 end
local prefix = 'sending|' .. ARGV[1] .. '|'
if v and string.sub(v, 1, string.len(prefix)) == prefix then
  redis.call('set', KEYS[1], prefix .. (now + tonumber(ARGV[2])) .. '|' .. ARGV[4], 'EX', ARGV[3])
  return 1
end
return 0
"""

# Leave a claim in its ambiguous state for good (lease deadline 0, no member): a redo of a
# send the `skip` policy refused to repeat is seen as a takeover again, at once.
_ABANDON = """
local v = redis.call('get', KEYS[1])
local prefix = 'sending|' .. ARGV[1] .. '|'
if v and string.sub(v, 1, string.len(prefix)) == prefix then
  redis.call('set', KEYS[1], prefix .. '0|', 'KEEPTTL')
  return 1
end
return 0
"""

_RELEASE = """
local v = redis.call('get', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Claim:
    """The outcome of trying to claim a send."""

    # ours: send it; taken: a previous sender died mid-send (whether its send reached the
    # provider is unknowable); sent: already sent; busy: someone else is sending, retry later.
    state: Literal["ours", "taken", "sent", "busy"]
    token: str = ""
    sent: SentRecord | None = None
    retry_after_s: float = 0.0
    previous_member: str = ""  # with `taken`: the dead holder's member id, if it named one


def _claim_outcome(state: str, detail: list[str], token: str) -> Claim:
    """The Claim of a final answer of the claim script (anything but `held`); pure."""
    if state == "ours":
        return Claim("ours", token=token)
    if state == "taken":
        return Claim("taken", token=token, previous_member=detail[0])
    if state == "sent":
        _, provider, attempt, msgid = detail[0].split("|", 3)
        return Claim("sent", sent=SentRecord(provider, msgid or None, int(attempt)))
    return Claim("busy", retry_after_s=max(int(detail[0]), 50) / 1000)


class ClaimStore:
    """Redis claims in front of the Postgres delivery log, for one deliver process."""

    def __init__(
        self,
        redis_url: str,
        log: DeliveryLog,
        *,
        lease_s: float,
        ttl_s: int,
        member: str | None = None,
        member_ttl_s: float = 4.0,
        prefix: str = "tidings:claim:",
        member_prefix: str = "tidings:member:",
    ) -> None:
        # A blocking pool: a burst of claims waits for a connection instead of failing.
        pool = fast_pool(
            redis_url, blocking=True, max_connections=64, timeout=5, socket_timeout=5,
            socket_connect_timeout=2,
        )  # fmt: skip
        self._redis = aioredis.Redis(connection_pool=pool)
        # The heartbeat has a connection of its own: it must not queue behind a burst of
        # claims for a pooled one while the member's liveness key runs out.
        self._beats = aioredis.Redis.from_pool(
            fast_pool(redis_url, socket_timeout=1, socket_connect_timeout=1, max_connections=2)
        )
        self._log = log
        self._lease_ms = int(lease_s * 1000)
        self._ttl_s = ttl_s
        self._prefix = prefix
        self.member = member or uuid.uuid4().hex
        self._member_prefix = member_prefix
        self._member_ttl_ms = int(member_ttl_s * 1000)
        self._claim = self._redis.register_script(_CLAIM)
        self._release = self._redis.register_script(_RELEASE)
        self._abandon = self._redis.register_script(_ABANDON)
        self._extend = self._redis.register_script(_EXTEND)
        self._succeed = self._redis.register_script(_SUCCEED)
        # One round trip per batch, not per notification: the claims (and the `sent|` marks)
        # asked for while the previous pipeline was on the wire ride the next one.
        self._claims: Coalescer[tuple[str, str, str], list[str]] = Coalescer(self._claim_batch)
        self._marks: Coalescer[tuple[str, str], bool] = Coalescer(self._mark_batch)
        self._tokens = itertools.count()

    def new_token(self) -> str:
        """A claim token unique to this incarnation (member id + counter: no uuid per send)."""
        return f"{self.member}.{next(self._tokens):x}"

    def _key(self, nid: str) -> str:
        return self._prefix + nid

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as exc:
            raise DependencyDown("redis", f"Redis {what} failed: {exc}") from exc

    async def beat(self) -> None:
        """Renew this process's liveness key; raises DependencyDown."""
        await self._call(
            "heartbeat",
            self._beats.set(self._member_prefix + self.member, b"1", px=self._member_ttl_ms),
        )

    async def succeed(self, slot: str) -> str:
        """Become the live incarnation of member slot `slot`; retires the previous one's key.

        Returns the previous incarnation's member id ('' if none). Raises DependencyDown.
        """
        raw = await self._call(
            "member handover",
            self._succeed(
                keys=[f"{self._member_prefix}slot:{slot}"], args=[self.member, self._ttl_s]
            ),
        )
        old = raw.decode() if isinstance(raw, bytes) else str(raw or "")
        if old and old != self.member:
            # Crashing right here leaves the old key to lapse by its TTL: a slower takeover.
            await self._call("member retirement", self._redis.delete(self._member_prefix + old))
        return old

    async def known_sent(self, ids: list[str]) -> dict[str, SentRecord]:
        """The Postgres backstop for a batch: which of `ids` were already sent."""
        return await self._log.sent(ids)

    async def claim(self, nid: str, token: str | None = None) -> Claim:
        """Try to become the one sender of `nid`; raises DependencyDown if Redis is gone.

        One script run, batched with the other claims of the moment into one pipeline,
        unless the claim is leased to a member: then that member's liveness key is looked
        up, and if it is gone the claim is taken over at once by a second call that takes
        it only while it is unchanged (compare and set; a claim that changed meanwhile is
        looked at afresh). A live member's claim is `busy` until its lease ends.

        Pass the same `token` (`new_token()`) when calling again after DependencyDown: a
        claim the lost reply had granted is then handed back instead of waited out. (If that
        lost reply was a takeover, the retry sees it as `ours`: the takeover goes unflagged.)
        """
        token = token or self.new_token()
        gone = ""  # the claim value whose member was found gone
        for _ in range(_TAKEOVER_TRIES):
            state, *detail = await self._claim_once(nid, token, gone)
            if state != "held":
                return _claim_outcome(state, detail, token)
            left_ms, member, value = detail
            if await self._call("member check", self._redis.exists(self._member_prefix + member)):
                break
            gone = value
        return Claim("busy", retry_after_s=max(int(left_ms), 50) / 1000)

    async def _claim_once(self, nid: str, token: str, gone: str) -> list[str]:
        """One run of the claim script on the claim key alone; its answer as text."""
        return await self._claims((self._key(nid), token, gone))

    async def _claim_batch(
        self, asks: list[tuple[str, str, str]]
    ) -> list[list[str] | BaseException]:
        """The claim script over many keys, one pipeline (no MULTI: each key is its own
        script run, so Redis Cluster may spread them). Raises DependencyDown for all."""

        async def run() -> list[Any]:
            # EVALSHA straight into the pipeline: a pipeline of registered scripts would ask
            # SCRIPT EXISTS first, a second round trip for every batch. A Redis that lost the
            # script (restart, FLUSHALL) answers NOSCRIPT to every call of the batch, none of
            # which ran: load it and run the batch again.
            for _ in range(2):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, token, gone in asks:
                        pipe.evalsha(
                            self._claim.sha, 1, key, token, self._lease_ms, self._ttl_s,
                            self.member, gone,
                        )  # fmt: skip
                    results = list(await pipe.execute(raise_on_error=False))
                if not any(isinstance(r, NoScriptError) for r in results):
                    return results
                await self._redis.script_load(_CLAIM)
            return results

        out: list[list[str] | BaseException] = []
        for raw in await self._call("claim", run()):
            if isinstance(raw, BaseException):
                out.append(DependencyDown("redis", f"Redis claim failed: {raw}"))
            else:
                out.append([x.decode() if isinstance(x, bytes) else str(x) for x in raw])
        return out

    async def _mark_batch(self, marks: list[tuple[str, str]]) -> list[bool | BaseException]:
        """`sent|…` for many keys, one pipeline; False where Redis didn't take it (tolerated)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, val in marks:
                    pipe.set(key, val, ex=self._ttl_s)
                results = await pipe.execute(raise_on_error=False)
        except RedisError:
            return [False] * len(marks)
        return [r is True for r in results]

    async def record_sent(
        self,
        nid: str,
        channel: str,
        rec: SentRecord,
        *,
        notification: bytes | None = None,
    ) -> float | None:
        """Record an accepted send in Postgres and Redis at once; returns when Postgres holds it.

        Both writes start together, so the first durable trace of the send follows the
        provider's answer by one round trip. Postgres is the record: its failure raises
        DependencyDown and the caller calls `record_sent` again (idempotent) until it holds.
        Redis is the fast path for redeliveries: its failure is tolerated (the claim then
        lapses, and a redelivery finds the Postgres row).

        Returns the event-loop time at which the Redis write completed, or None if it failed.
        `notification` (the raw dispatch record) is stored with the Postgres row, for receipts.
        """
        val = f"sent|{rec.provider}|{rec.attempt}|{rec.provider_message_id or ''}"
        loop = asyncio.get_running_loop()
        # A future, not a task per send: when the mark came back is stamped by a callback.
        redis_write = self._marks.submit((self._key(nid), val))
        stamp: list[float] = []
        redis_write.add_done_callback(lambda _: stamp.append(loop.time()))
        try:
            await self._log.record(nid, channel, rec, notification=notification)
        finally:
            ok = await redis_write
        return stamp[0] if ok and stamp else None

    async def backfill(
        self, nid: str, channel: str, rec: SentRecord, *, notification: bytes | None = None
    ) -> None:
        """Make sure Postgres holds a send Redis knows (a crash can fall between the two).

        Idempotent (the insert ignores an existing row); raises DependencyDown.
        """
        await self._log.record(nid, channel, rec, notification=notification)

    async def extend(self, held: dict[str, str]) -> list[str]:
        """Renew the leases of claims in progress (notification id → token), in one round trip.

        Returns the ids whose claim is no longer the caller's (taken over or gone). Raises
        DependencyDown if Redis is gone.
        """
        if not held:
            return []

        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for nid, token in held.items():
                    await self._extend(
                        keys=[self._key(nid)],
                        args=[token, self._lease_ms, self._ttl_s, self.member],
                        client=pipe,
                    )
                return list(await pipe.execute())

        results = await self._call("lease renewal", run())
        return [nid for nid, ok in zip(held, results, strict=True) if not ok]

    async def release(self, nid: str, token: str) -> None:
        """Give a claim up after a failed send, so a later retry or replay can take it.

        Best effort: if Redis is gone the claim lapses by itself (lease and member TTL).
        """
        try:
            await self._release(keys=[self._key(nid)], args=[f"sending|{token}|"])
        except RedisError:
            log.debug("claim release of %s failed; it lapses by itself", nid, exc_info=True)

    async def abandon(self, nid: str, token: str) -> None:
        """Keep a taken-over claim ambiguous instead of holding it: its lease is over at once.

        For a send the `skip` policy marked `unknown`: a redo (the batch aborted before its
        commit) takes it over again and skips again, without waiting out a lease. Best
        effort: if Redis is gone the claim lapses by itself.
        """
        try:
            await self._abandon(keys=[self._key(nid)], args=[token])
        except RedisError:
            log.debug("claim abandon of %s failed; it lapses by itself", nid, exc_info=True)

    async def close(self) -> None:
        """Close the Redis pool and the delivery log's connection; never raises for Redis."""
        await self._log.close()
        await self._claims.close()
        await self._marks.close()
        with contextlib.suppress(RedisError):
            await self._redis.delete(self._member_prefix + self.member)
        await self._redis.aclose()
        await self._redis.connection_pool.disconnect()
        await self._beats.aclose()
