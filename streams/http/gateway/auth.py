"""The gateway's API-key check, as a FastAPI dependency: `Key` in a route's signature is the
request's verified key, within its rate limit (the app puts its ApiKeyStore at
`app.state.keys`, its RateLimiter or None at `app.state.limiter`)."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request

from streams.http.gateway.keys import ApiKey, parse_key, verify
from streams.http.gateway.keystore import ApiKeyStore
from streams.http.gateway.problems import Problem, answered
from streams.state.rate_limit import RateLimiter

__all__ = ["Key", "api_key"]


async def api_key(request: Request) -> ApiKey:
    """The request's API key, verified; raises Problem 401 (or 503: Postgres away)."""
    keys: ApiKeyStore = request.app.state.keys
    auth = request.headers.get("authorization", "")
    text = auth[7:] if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
    if not text:
        raise Problem(
            401,
            "No API key",
            "send `Authorization: Bearer <key>`; make a key "
            "with `tidings apikeys create TENANT --scope events:write`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    parsed = parse_key(text)
    if parsed is None:
        raise Problem(
            401,
            "Invalid API key",
            "the key is not of the form tdk_<prefix>_<secret>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    stored = await answered(keys.get(parsed[0]), "API keys")
    if stored is None or not verify(stored, parsed[1]):
        raise Problem(
            401,
            "Invalid API key",
            "unknown or revoked key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    limiter: RateLimiter | None = request.app.state.limiter
    limit = request.app.state.settings.gateway.rate_limit_per_s
    if limiter is not None and limit:
        wait = await limiter.allow(stored.prefix, limit)
        if wait is not None:
            raise Problem(
                429,
                "Too many requests",
                f"this API key is past gateway.rate_limit_per_s = {limit} requests a second; "
                "wait and retry",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
    return stored


Key = Annotated[ApiKey, Depends(api_key)]
