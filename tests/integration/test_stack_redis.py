"""The local Redis works: SET NX EX is the primitive behind dedup claims."""

from __future__ import annotations

import redis


def test_set_nx_ex(redis_client: redis.Redis, unique: str) -> None:
    key = f"test:claim:{unique}"
    assert redis_client.set(key, "owner-a", nx=True, ex=30) is True
    assert redis_client.set(key, "owner-b", nx=True, ex=30) is None
    assert redis_client.get(key) == b"owner-a"
    ttl = redis_client.ttl(key)
    assert 0 < ttl <= 30
    redis_client.delete(key)
    assert redis_client.set(key, "owner-b", nx=True, ex=30) is True
    redis_client.delete(key)
