"""RateLimiter with Redis away: requests go through, nothing raises (a real client, a port
nothing listens on)."""

from __future__ import annotations

import asyncio

from streams.state.rate_limit import RateLimiter
from tests.peers.npm import free_port


def test_redis_away_lets_requests_through() -> None:
    async def go() -> list[float | None]:
        lim = RateLimiter(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
        try:
            return [await lim.allow("k", 1) for _ in range(3)]
        finally:
            await lim.close()

    assert asyncio.run(go()) == [None, None, None]
