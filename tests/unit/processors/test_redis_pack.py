"""PackedConnection sends exactly the bytes redis-py's own packing would."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, ConnectionPool
from redis.asyncio.connection import Connection, SSLConnection

from processors.redis_pack import PackedConnection, fast_pool


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "0123abcd", 2, "tidings:claim:n1", "tidings:claim:n2", 30000, 1.5, -7),
        ("SCRIPT LOAD", "return 1"),  # a first argument of two words
        (b"CONFIG GET", "maxmemory"),
        ("SET", "k", b"\x00\xff\r\n", "é日本"),
        ("SET", "big", "v" * 100_000),  # past redis-py's buffer cutoff
    ],
)
def test_the_same_bytes_as_redis_py(args: tuple[Any, ...]) -> None:
    ours = b"".join(PackedConnection().pack_command(*args))
    theirs = b"".join(Connection().pack_command(*args))
    assert ours == theirs


def test_the_pool_uses_it_for_plain_redis_only() -> None:
    plain = fast_pool("redis://127.0.0.1:1/0", blocking=True, max_connections=3)
    assert isinstance(plain, BlockingConnectionPool)
    assert plain.connection_class is PackedConnection
    tls = fast_pool("rediss://127.0.0.1:1/0")
    assert type(tls) is ConnectionPool and tls.connection_class is SSLConnection


def test_a_memoryview_goes_redis_py_s_own_way() -> None:
    strided = memoryview(b"abcdef")[::2]  # hiredis would pack the underlying bytes
    args = ("SET", "k", strided)
    ours = b"".join(bytes(p) for p in PackedConnection().pack_command(*args))
    theirs = b"".join(bytes(p) for p in Connection().pack_command(*args))
    assert ours == theirs and b"ace" in ours


def test_the_scheme_is_matched_whatever_its_case() -> None:
    assert fast_pool("REDIS://127.0.0.1:1/0").connection_class is PackedConnection
