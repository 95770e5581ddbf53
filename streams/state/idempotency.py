"""`Idempotency-Key` records in Redis, shared by every gateway process (async).

A request with a key first claims `tidings:idem:<tenant>:<sha256(key)>` with SET NX and a
short TTL (`pending_s`); once its records are acknowledged it stores its answer there for
`ttl_s` (24 h). A second request with the same key then gets, by `begin`:

- the stored answer (`replay`) when its body is the same (same fingerprint);
- `mismatch` when the body differs (the caller answers 422);
- `in_progress` while the first one is still producing (409, retry shortly).

A process that dies between claim and answer leaves the claim to expire after `pending_s`,
so a key is never stuck. Redis away: `begin` says `unchecked` and the request goes on; the
trigger's event id is derived from the key (schemas.trigger.trigger_event_id), so the
pipeline still sends each notification once, but a reused key with another body is then
not refused. Nothing connects in `__init__`; use from one event loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from processors.redis_pack import fast_pool
from streams.state.every import Every

__all__ = ["Begun", "IdempotencyStore", "fingerprint"]

log = logging.getLogger(__name__)

Verdict = Literal["new", "replay", "mismatch", "in_progress", "unchecked"]


def fingerprint(body: Any) -> str:
    """The same for the same request body, whatever its key order; pure."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Begun:
    """What `begin` found: `answer` is the stored answer of a `replay`."""

    verdict: Verdict
    answer: dict[str, Any] | None = None


def decide(stored: str | None, fp: str) -> Begun:
    """The verdict for a key already claimed with `stored` (None: it just expired); pure."""
    if stored is None:
        return Begun("new")
    try:
        rec = json.loads(stored)
    except ValueError:
        return Begun("new")  # not ours to read: treat the key as free (it is overwritten)
    if rec.get("fp") != fp:
        return Begun("mismatch")
    if rec.get("answer") is None:
        return Begun("in_progress")
    return Begun("replay", rec["answer"])


class IdempotencyStore:
    """Claim, answer and forget Idempotency-Key records; never raises for Redis being away."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tidings:idem:",
        ttl_s: int = 86400,
        pending_s: int = 60,
        timeout_s: float = 0.5,
    ) -> None:
        self._redis = aioredis.Redis.from_pool(
            fast_pool(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        )
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._pending_s = pending_s
        self._warn_every = Every(60.0)

    def _key(self, tenant: str, key: str) -> str:
        return f"{self._prefix}{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"

    async def begin(self, tenant: str, key: str, fp: str) -> Begun:
        """Claim `key` for a request whose body has fingerprint `fp`, or say why not."""
        name = self._key(tenant, key)
        pending = json.dumps({"fp": fp, "answer": None})
        try:
            for _ in range(2):  # a claim that expires between SET NX and GET: try once more
                if await self._redis.set(name, pending, nx=True, ex=self._pending_s):
                    return Begun("new")
                got = await self._redis.get(name)
                if got is not None:
                    return decide(got.decode() if isinstance(got, bytes) else got, fp)
            return Begun("new")
        except (RedisError, OSError) as exc:
            self._warn(exc)
            return Begun("unchecked")

    async def answer(self, tenant: str, key: str, fp: str, answer: dict[str, Any]) -> None:
        """Store the answer of a claimed key for `ttl_s`; Redis away is logged, not raised."""
        rec = json.dumps({"fp": fp, "answer": answer}, separators=(",", ":"))
        try:
            await self._redis.set(self._key(tenant, key), rec, ex=self._ttl_s)
        except (RedisError, OSError) as exc:
            self._warn(exc)

    async def forget(self, tenant: str, key: str) -> None:
        """Drop a claim whose request failed, so a retry is not refused as in progress."""
        try:
            await self._redis.delete(self._key(tenant, key))
        except (RedisError, OSError) as exc:
            self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        if self._warn_every.due():
            log.warning("gateway: Idempotency-Key records unavailable, Redis unreachable (%s); "
                        "requests go on (trigger ids still derive from the key)", exc)  # fmt: skip

    async def close(self) -> None:
        """Close the connections; idempotent."""
        await self._redis.aclose()
