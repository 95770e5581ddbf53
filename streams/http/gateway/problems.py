"""Problem Details for HTTP APIs (RFC 9457): the gateway's one error shape.

`Problem(status, title, detail, pointer)` is raised by pure code and turned into an
`application/problem+json` answer by the app (app.py): `type` is `about:blank` plus the
status's title, `detail` says what was wrong and how to fix it, and `pointer` (a JSON
pointer into the request body, or `ce-` for a binary-mode header) names the field.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from streams.exceptions import DependencyDown, StreamsError
from streams.state.pg_async import RefusedInput

__all__ = ["PROBLEM_JSON", "Problem", "answered"]

T = TypeVar("T")

PROBLEM_JSON = "application/problem+json"


class Problem(StreamsError):
    """A request the gateway refuses, with the answer to give."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        pointer: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.pointer = pointer
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The problem+json document."""
        doc: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.pointer is not None:
            doc["pointer"] = self.pointer
        return doc


async def answered(call: Awaitable[T], what: str) -> T:
    """`await call`, a store's errors as the answers to give: a value Postgres refused is a
    400 (retrying can't help), a store unreachable a 503 with Retry-After."""
    try:
        return await call
    except RefusedInput as exc:
        raise Problem(400, "Invalid value", f"{exc}: fix the request") from None
    except DependencyDown as exc:
        raise Problem(
            503, f"{what} unavailable", f"{exc}; retry", headers={"Retry-After": "5"}
        ) from exc
