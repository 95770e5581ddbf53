"""An ASGI middleware that bounds every HTTP request body, for both HTTP stages.

`BodyLimit(app, limit, refusal)`: a body declared (Content-Length) or sent past `limit`
bytes is answered 413 with `refusal(limit)` = (content type, body) before any route (or
its auth) reads it: FastAPI parses a body parameter before the route's dependencies run.
Never more than `limit` bytes of a body are buffered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["BodyLimit", "Refusal"]

Refusal = Callable[[int], tuple[str, bytes]]


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: request bodies past `limit` bytes get 413 (`refusal`)."""

    def __init__(self, app: Any, limit: int, refusal: Refusal) -> None:
        self._app = app
        self._limit = limit
        self._refusal = refusal

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self._limit:
            await self._refuse(send)
            return
        seen = 0

        async def bounded() -> Any:
            # A route that parses a body parameter turns this into its own 400; a body
            # declared too large is a 413 above.
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._limit:
                    raise _TooLarge
            return message

        try:
            await self._app(scope, bounded, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        media, body = self._refusal(self._limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", media.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
