"""Frequency caps in Redis: a whole batch of notifications checked in one round trip.

`CapStore(redis_url).check(requests, now_ms)` answers one `CapResult` per `CapRequest`
(catalog/caps.py builds them). One Lua script does the work: a **sliding-window log** per cap
key, a ZSET of the notifications counted in the window (score: the ms they were counted at;
member: a 64-bit hash of the request's `member`, the notification id). For each check it
looks for the member (ZSCORE), counts (ZCARD), drops what left the window when the log is
full (ZREMRANGEBYSCORE: a log never holds more than `limit` entries) and, once every check
of the request has room, adds the member to each (ZADD) and sets the key to expire one
window after its last entry (PEXPIRE).

Semantics:

- Requests are applied in order, inside the batch too: the 4th request of a 3/hour cap in
  one batch is refused, like the 4th of a later batch.
- All or nothing per request: a request refused by one of its caps is counted in none.
- Idempotent per member: a request whose member a log already holds is not counted again
  (a batch redone after an aborted transaction gets the same answers, not a double count).
- A refusal names the first refusing check (`cap`, in config order) and when its window has
  room again (`retry_at_ms`: the entry that must leave, plus the window).
- The clock is the caller's `now_ms` (route's wall clock; keep hosts on NTP).

Why a log and not GCRA: it is exact ("3 in any hour", where GCRA spreads them at 20 minutes
after a burst) and idempotent by member. Its cost is one entry (~40 bytes) per counted
notification per cap key, for one window; the limits are bounded (`MAX_CAP_LIMIT`).

A batch goes as one pipeline of EVALSHA calls (one script run per `max_checks` checks, so
Redis is never blocked for long) in one round trip. A Redis that lost the script (restart,
SCRIPT FLUSH) answers NOSCRIPT: the script is loaded and those runs sent again. The script
touches many keys, so on a Redis Cluster they would have to share a slot: tidings uses one
Redis (with replicas, if any).

Redis unreachable, or answering an error, raises `DependencyDown("redis", …)`: the caller
keeps the batch and retries (or fails open, its choice); never a crash. **Redis lost** (a
restart without persistence, a failover to a replica behind) means the caps start from zero:
for one window, recipients may get up to one full cap more than it says.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError, RedisError

from catalog.caps import CapRequest, CapResult
from streams.exceptions import DependencyDown

__all__ = ["CAP_MAX_CHECKS", "CapStore"]

CAP_MAX_CHECKS = 2000

# KEYS: the distinct keys of one run. ARGV[1]: now (ms); ARGV[2]: the number of requests; then
# per request its member and its number of checks, then per check: key index, limit, window ms.
# Returns two integers per request: 0 (allowed) or the 1-based index of the refusing check,
# and the ms at which that check's window has room again (0 when allowed).
_SCRIPT = """
local now = tonumber(ARGV[1])
local out = {}
local at = 3
for _ = 1, tonumber(ARGV[2]) do
  local member = ARGV[at]
  local n = tonumber(ARGV[at + 1])
  at = at + 2
  local refused, retry = 0, 0
  local fresh, windows = {}, {}
  for c = 1, n do
    local key = KEYS[tonumber(ARGV[at])]
    local limit = tonumber(ARGV[at + 1])
    local window = tonumber(ARGV[at + 2])
    at = at + 3
    if refused == 0 then
      local seen = redis.call('zscore', key, member)
      if not seen or tonumber(seen) <= now - window then
        -- A log holds at most `limit` entries: it is trimmed only when full.
        local count = redis.call('zcard', key)
        if count >= limit then
          count = count - redis.call('zremrangebyscore', key, '-inf', now - window)
        end
        if count >= limit then
          refused = c
          local e = redis.call('zrange', key, count - limit, count - limit, 'WITHSCORES')
          retry = tonumber(e[2]) + window
        else
          fresh[#fresh + 1] = key
          windows[#windows + 1] = window
        end
      end
    end
  end
  if refused == 0 then
    for i = 1, #fresh do
      redis.call('zadd', fresh[i], ARGV[1], member)
      redis.call('pexpire', fresh[i], windows[i])
    end
  end
  out[#out + 1] = refused
  out[#out + 1] = retry
end
return out
"""

_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()
_ALLOWED = CapResult(allowed=True)


def _member(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class CapStore:
    """The caps of one process, in Redis; nothing connects before the first `check`.

    Synchronous (the route stage's loop is); one client, safe for one thread at a time.
    `timeout_s` bounds each round trip; `max_checks` bounds one script run.
    """

    def __init__(
        self, redis_url: str, *, timeout_s: float = 5.0, max_checks: int = CAP_MAX_CHECKS
    ) -> None:
        if max_checks < 1:
            raise ValueError(f"max_checks must be at least 1, got {max_checks}")
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=timeout_s, socket_connect_timeout=min(timeout_s, 2.0)
        )
        self._max_checks = max_checks

    def check(self, requests: Sequence[CapRequest], now_ms: int) -> list[CapResult]:
        """Count each request in its caps, in order, all or nothing; one round trip.

        One result per request, in order. Requests without checks are allowed without
        Redis (a batch of none makes no round trip). Raises DependencyDown if Redis is
        unreachable or answers an error.
        """
        runs = self._plan(requests)
        if not runs:
            return [_ALLOWED] * len(requests)
        try:
            answers = self._run(runs, int(now_ms))
        except RedisError as exc:
            raise DependencyDown(
                "redis", f"Redis cap check failed: {exc}; is Redis up (`tidings doctor`)?"
            ) from exc
        results = [_ALLOWED] * len(requests)
        for (indices, _keys, _args), flat in zip(runs, answers, strict=True):
            for pos, i in enumerate(indices):
                refused, retry = int(flat[2 * pos]), int(flat[2 * pos + 1])
                if refused:
                    check = requests[i].checks[refused - 1]
                    results[i] = CapResult(False, check.cap, retry, check.behaviour)
        return results

    def _plan(self, requests: Sequence[CapRequest]) -> list[tuple[list[int], list[str], list[Any]]]:
        """The script runs of a batch: (request indices, KEYS, ARGV after `now`) each."""
        runs: list[tuple[list[int], list[str], list[Any]]] = []
        indices: list[int] = []
        keys: dict[str, int] = {}
        args: list[Any] = []
        checks = 0
        for i, req in enumerate(requests):
            if not req.checks:
                continue
            if checks and checks + len(req.checks) > self._max_checks:
                runs.append((indices, list(keys), args))
                indices, keys, args, checks = [], {}, [], 0
            indices.append(i)
            args += (_member(req.member), len(req.checks))
            for c in req.checks:
                args += (keys.setdefault(c.key, len(keys) + 1), c.limit, c.window_ms)
            checks += len(req.checks)
        if indices:
            runs.append((indices, list(keys), args))
        return runs

    def _run(self, runs: list[tuple[list[int], list[str], list[Any]]], now_ms: int) -> list[Any]:
        """Every run in one pipeline; NOSCRIPT runs again once the script is loaded."""
        answers: list[Any] = [None] * len(runs)
        todo = list(range(len(runs)))
        for attempt in range(2):
            with self._redis.pipeline(transaction=False) as pipe:
                for r in todo:
                    _indices, keys, args = runs[r]
                    pipe.evalsha(_SHA, len(keys), *keys, now_ms, len(_indices), *args)
                replies = pipe.execute(raise_on_error=False)
            missing = []
            for r, reply in zip(todo, replies, strict=True):
                if isinstance(reply, NoScriptError) and attempt == 0:
                    missing.append(r)
                elif isinstance(reply, BaseException):
                    raise reply if isinstance(reply, RedisError) else RedisError(str(reply))
                else:
                    answers[r] = reply
            if not missing:
                return answers
            self._redis.script_load(_SCRIPT)
            todo = missing
        return answers  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        """Close the connection pool; never raises for Redis."""
        with contextlib.suppress(RedisError):
            self._redis.close()
