"""Request rate limits per API key in Redis, shared by every gateway process (async).

A fixed one-second window per key: `INCR tidings:rl:<prefix>:<second>` (expiring after two
seconds) in one pipelined round trip; over `limit` the caller answers 429 with the seconds
until the window turns. Fixed windows let up to twice the limit through across a window
boundary; for a per-second API limit that is the usual trade for one round trip.

Redis away: the request is let through (logged at most once a minute) and nothing crashes,
as for caps (docs/recipients.md): a limit is protection, never the reason a send fails.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from processors.redis_pack import fast_pool
from streams.state.every import Every

__all__ = ["RateLimiter"]

log = logging.getLogger(__name__)


class RateLimiter:
    """`allow(name, limit)` → None (go on) or the seconds to wait. Nothing connects in
    `__init__`; use from one event loop."""

    def __init__(self, url: str, *, prefix: str = "tidings:rl:", timeout_s: float = 0.5) -> None:
        self._redis = aioredis.Redis.from_pool(
            fast_pool(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        )
        self._prefix = prefix
        self._warn_every = Every(60.0)

    async def allow(self, name: str, limit: int, *, now: float | None = None) -> float | None:
        """Count one request of `name` in this second; None when within `limit`, else the
        seconds until the next window. Never raises for Redis being away (lets it through)."""
        t = time.time() if now is None else now
        second = int(t)
        key = f"{self._prefix}{name}:{second}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 2)
            count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            if self._warn_every.due():
                log.warning(
                    "gateway: rate limits off, Redis unreachable (%s); letting requests through",
                    exc,
                )
            return None
        if int(count) <= limit:
            return None
        return max(0.001, second + 1 - t)

    async def close(self) -> None:
        """Close the Redis connections."""
        await self._redis.aclose()
