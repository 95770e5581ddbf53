"""Problem Details for HTTP APIs (RFC 9457): the gateway's one error shape.

`Problem(status, title, detail, pointer)` is raised by pure code and turned into an
`application/problem+json` answer by the app (app.py): `type` is `about:blank` plus the
status's title, `detail` says what was wrong and how to fix it, and `pointer` (a JSON
pointer into the request body, or `ce-` for a binary-mode header) names the field.
`problem_responses(...)` documents a route's problems in OpenAPI (its `responses=`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from streams.exceptions import DependencyDown, StreamsError
from streams.state.directory import DirectoryRefused
from streams.state.pg_async import RefusedInput

__all__ = ["PROBLEM_JSON", "Problem", "ProblemDoc", "answered", "problem_responses"]

T = TypeVar("T")

PROBLEM_JSON = "application/problem+json"

# What each status means on any route; a route may say more (problem_responses(described=)).
_MEANS = {
    400: "the request is invalid; `pointer` names the field",
    401: "no credentials, or not valid ones",
    403: "the API key lacks the scope",
    404: "no such resource in this tenant",
    409: "a conflict with the resource's state: `detail` says which",
    413: "the body is more than gateway.max_body_bytes",
    415: "an unsupported Content-Type",
    422: "the request is well-formed but can't be processed: `detail` says why",
    429: "past gateway.rate_limit_per_s for this key: wait Retry-After seconds",
    503: "a store (Kafka, Postgres or Redis) is unavailable: retry after Retry-After seconds",
}


class ProblemDoc(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    pointer: str | None = None


_PROBLEM_SCHEMA = ProblemDoc.model_json_schema()


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


def problem_responses(
    *statuses: int, described: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the problems a route answers: each status as
    `application/problem+json` with ProblemDoc's schema (what `Problem.body()` is), described
    by `described` or else by what the status means on any route."""
    said = described or {}
    return {
        status: {
            "description": said.get(status, _MEANS.get(status, "see `detail`")),
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


async def answered(call: Awaitable[T], what: str, pointer: str | None = None) -> T:
    """`await call`, a store's errors as the answers to give: a value Postgres refused (a NUL
    in a text, say) is a 400 naming `pointer` when given (retrying can't help), a store
    unreachable a 503 with Retry-After."""
    try:
        return await call
    except (RefusedInput, DirectoryRefused) as exc:
        raise Problem(400, "Invalid value", f"{exc}: fix the request", pointer) from None
    except DependencyDown as exc:
        raise Problem(
            503, f"{what} unavailable", f"{exc}; retry", headers={"Retry-After": "5"}
        ) from exc
