"""redis.asyncio connections that pack commands with hiredis (C), not in Python.

redis-py's synchronous client packs commands with hiredis when it is installed; its asyncio
client always packs them in Python (`AbstractConnection.pack_command`), which was ~5% of a
deliver process's CPU (every claim and `sent` mark is an EVALSHA with a handful of
arguments; bench profile of `deliver-inapp`). `PackedConnection` packs the same bytes with
`hiredis.pack_command`; `fast_pool(url, **kw)` is `BlockingConnectionPool.from_url` /
`ConnectionPool.from_url` with it. The arguments are first encoded by the connection's own
encoder, so what goes on the wire is exactly what redis-py would send (a unit test compares).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio import BlockingConnectionPool, ConnectionPool
from redis.asyncio.connection import Connection

__all__ = ["PackedConnection", "fast_pool"]


class PackedConnection(Connection):
    """A redis.asyncio Connection whose command packing is hiredis's."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # As redis-py does: a first argument with a space ("SCRIPT LOAD") is several words.
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        enc: Callable[[Any], bytes | memoryview] = self.encoder.encode
        parts = tuple(enc(a) for a in args)
        if not all(type(p) is bytes for p in parts):
            return super().pack_command(*args)  # a memoryview: redis-py's own way
        packed: bytes = hiredis.pack_command(parts)  # type: ignore[arg-type]
        return [packed]


def fast_pool(url: str, *, blocking: bool = False, **kwargs: Any) -> ConnectionPool:
    """A connection pool for `url` (redis:// only: TLS and unix sockets keep their own
    classes) whose connections are `PackedConnection`s; `kwargs` as for `from_url`."""
    cls = BlockingConnectionPool if blocking else ConnectionPool
    if url[:8].lower() == "redis://":
        kwargs["connection_class"] = PackedConnection
    return cls.from_url(url, **kwargs)
