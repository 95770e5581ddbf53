"""Presence: whether a recipient has a live Socket.IO connection on some gateway process.

The gateway writes `presence_key(tenant, recipient)` in Redis (TTL 60 s, refreshed every
20 s while a connection of the recipient is open: streams/http/gateway/realtime.py). Route
reads it for the recipients of a batch in one MGET (`PresenceReader.online`), when a rule
of the catalog reads `recipient.online` (catalog.Catalog.reads_presence).

Presence is advice, never a reason to stall or fail: Redis away reads as "nobody online"
(logged at most once a minute), so a rule that skips push for online recipients sends the
push, the side that loses nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection

import redis
from redis.exceptions import RedisError

from streams.state.every import Every

__all__ = ["PRESENCE_PREFIX", "PresenceReader", "presence_key"]

log = logging.getLogger(__name__)

PRESENCE_PREFIX = "tidings:presence:"


def presence_key(tenant: str, recipient: str) -> str:
    """The Redis key of a recipient's presence; JSON, so no (tenant, id) spells another's."""
    return PRESENCE_PREFIX + json.dumps([tenant, recipient])


class PresenceReader:
    """Reads presence for many recipients at once (blocking; one thread at a time).
    Nothing connects in `__init__`."""

    def __init__(self, url: str, *, timeout_s: float = 0.5) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._warn_every = Every(60.0)

    def online(self, keys: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of the (tenant, recipient) `keys` online now: one round trip; never raises
        for Redis being away (then: none)."""
        order = list(keys)
        if not order:
            return set()
        try:
            got = self._redis.mget([presence_key(t, r) for t, r in order])
        except (RedisError, OSError) as exc:
            if self._warn_every.due():
                log.warning("route: presence unknown, Redis unreachable (%s); reading every "
                            "recipient as offline", exc)  # fmt: skip
            return set()
        return {k for k, v in zip(order, got, strict=True) if v is not None}

    def close(self) -> None:
        """Close the connections; idempotent."""
        self._redis.close()
