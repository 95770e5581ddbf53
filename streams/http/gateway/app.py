"""The gateway's FastAPI app: routes, API-key auth, bounded bodies, problem+json errors.

`create_app(settings, producer, keys)` builds it; the gateway stage (streams/stages/
gateway.py) serves it with uvicorn. OpenAPI 3.1 at `/openapi.json`, interactive docs at
`/docs`. What is built today: `POST /v1/events`, `POST /v1/notify` (notify_api.py),
`/v1/recipients` (directory_api.py), `/v1/notifications` (history_api.py), `/v1/inbox`
(inbox_api.py) and `GET /healthz`
(docs/api.md; the rest of the gateway issue is listed there as not done).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from schemas.settings import TidingsSettings
from streams.http.body_limit import BodyLimit
from streams.http.callbacks_producer import AckProducer
from streams.http.gateway.auth import Key
from streams.http.gateway.directory_api import directory_router
from streams.http.gateway.history_api import history_router
from streams.http.gateway.inbox_api import InboxActions, inbox_router
from streams.http.gateway.intake import BATCH, STRUCTURED, events_from_request
from streams.http.gateway.keystore import ApiKeyStore
from streams.http.gateway.notify_api import notify_router
from streams.http.gateway.problems import PROBLEM_JSON, Problem, problem_responses
from streams.http.gateway.produce import produce_acked
from streams.runtime.records import Out
from streams.state.catalog import CatalogRef
from streams.state.directory import Directory
from streams.state.history import AuditHistory
from streams.state.idempotency import IdempotencyStore
from streams.state.rate_limit import RateLimiter

__all__ = ["AcceptedEvent", "EventsAccepted", "GatewayDeps", "create_app"]

log = logging.getLogger(__name__)
_STATIC = {
    name: resources.files("streams.http.gateway").joinpath("static", name).read_bytes()
    for name in ("inbox.html", "socket.io.min.js")
}
# The binary mode's attribute headers a browser may send (CORS has no wildcards in names).
_CE_HEADERS = [
    f"ce-{a}"
    for a in (
        "specversion",
        "id",
        "type",
        "source",
        "subject",
        "time",
        "tenantid",
        "dataschema",
        "datacontenttype",
    )
]
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class AcceptedEvent(BaseModel):
    """One event the broker acknowledged."""

    id: str
    type: str
    topic: str


class EventsAccepted(BaseModel):
    """`POST /v1/events` answered 202: every event of the request is durable in Kafka."""

    accepted: list[AcceptedEvent]


_PROBLEMS = problem_responses(
    400, 401, 403, 413, 415, 422, 429, 503,
    described={
        400: "the request is not a valid CloudEvent; `pointer` names the field",
        401: "no API key, or not a valid one",
        403: "the key lacks the scope, or the event names another tenant",
        413: "the body or the batch is too large",
        415: "not a CloudEvents content mode",
        422: "the event type has no domain topic",
        503: "Kafka or Postgres is unavailable: retry (the event id makes it idempotent)",
    },
)  # fmt: skip


def _problem(p: Problem) -> JSONResponse:
    return JSONResponse(p.body(), status_code=p.status, media_type=PROBLEM_JSON, headers=p.headers)


def _too_large(limit: int) -> tuple[str, bytes]:
    p = Problem(
        413, "Body too large", f"the body is more than gateway.max_body_bytes = {limit} bytes"
    )
    return PROBLEM_JSON, _DUMPS(p.body()).encode()


@dataclass(frozen=True)
class GatewayDeps:
    """The adapters the routes use (nothing here connects when built: the producer is
    started by the caller, the others connect on first use). `catalog`: what recipients'
    preferences may name (None: not checked here; the recipients stage still checks)."""

    producer: AckProducer
    keys: ApiKeyStore
    directory: Directory
    history: AuditHistory
    actions: InboxActions  # the inbox and its status events
    catalog: CatalogRef | None = None
    limiter: RateLimiter | None = None  # None: no rate limits
    idempotency: IdempotencyStore | None = None  # None: Idempotency-Key only derives ids


def create_app(settings: TidingsSettings, deps: GatewayDeps) -> FastAPI:
    """The gateway app; connects nothing."""
    app = FastAPI(
        title="tidings gateway",
        version="1",
        description="Events in, over HTTP. Server routes authenticate with `Authorization: "
        "Bearer <API key>` (`tidings apikeys create`), the inbox with a recipient token "
        "signed by the tenant's backend. Errors are RFC 9457 problem+json.",
    )
    app.state.keys = deps.keys
    app.state.settings = settings
    app.state.limiter = deps.limiter
    app.add_middleware(BodyLimit, limit=settings.gateway.max_body_bytes, refusal=_too_large)
    if settings.gateway.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.gateway.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", *_CE_HEADERS],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    producer = deps.producer

    @app.exception_handler(Problem)
    async def _on_problem(_: Request, exc: Problem) -> JSONResponse:
        return _problem(exc)

    @app.exception_handler(Exception)
    async def _on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("gateway: %s %s failed", request.method, request.url.path)
        return _problem(
            Problem(
                500,
                "Internal error",
                "the gateway failed on this request (its log says why); nothing was acknowledged",
            )
        )

    @app.exception_handler(HTTPException)
    async def _on_http_error(_: Request, exc: HTTPException) -> JSONResponse:
        # FastAPI's and Starlette's own refusals in the one error shape: a body that is not
        # UTF-8 (400: the only 400 they raise), an unknown path (404), a method not allowed.
        status = exc.status_code
        return _problem(
            Problem(status, HTTPStatus(status).phrase, str(exc.detail),
                    "/body" if status == 400 else None, dict(exc.headers or {}))
        )  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = "/" + "/".join(str(p) for p in err.get("loc", ()))
        return _problem(Problem(400, "Invalid request", str(err.get("msg")), where))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=EventsAccepted,
        responses=_PROBLEMS,
        summary="Publish CloudEvents (structured, binary or batched)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    STRUCTURED: {"schema": {"type": "object"}},
                    BATCH: {"schema": {"type": "array", "items": {"type": "object"}}},
                    "application/json": {"schema": {"type": "object"}},
                },
            }
        },
    )
    async def post_events(request: Request, key: Key) -> Response:
        """Produce the request's events to their domain topics; 202 only once the broker
        acknowledged every one. A retry with the same event ids is safe: notification ids
        derive from (source, id), so a retried event never sends twice."""
        if not key.allows("events:write"):
            raise Problem(403, "Missing scope", "this API key lacks the events:write scope")
        body = await request.body()  # bounded by BodyLimit
        events = events_from_request(
            request.headers.get("content-type", ""),
            request.headers,
            body,
            tenant=key.tenant,
            settings=settings,
        )
        outs = [Out(e.topic, e.value, e.key, list(e.headers)) for e in events]
        await produce_acked(producer, outs, "retry the request: the event ids make it idempotent")
        # The hot path answers bytes it built itself: FastAPI would validate and serialise
        # the response model again (the model still documents the answer in OpenAPI).
        accepted = [{"id": e.id, "type": e.type, "topic": e.topic} for e in events]
        return Response(_DUMPS({"accepted": accepted}), 202, media_type="application/json")

    @app.get("/inbox", include_in_schema=False)
    async def inbox_page() -> Response:
        """The web inbox (static/inbox.html): open it as /inbox#token=<recipient token>."""
        return Response(_STATIC["inbox.html"], media_type="text/html; charset=utf-8")

    @app.get("/socket.io.min.js", include_in_schema=False)
    async def socketio_client() -> Response:
        """The socket.io client the page loads (npm socket.io-client 4.8.1, MIT)."""
        return Response(
            _STATIC["socket.io.min.js"],
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    # After /v1/events: routes match in order, and the intake is the busiest.
    app.include_router(notify_router(settings, producer, deps.catalog, deps.idempotency))
    app.include_router(directory_router(settings, producer, deps.directory, deps.catalog))
    app.include_router(history_router(deps.history))
    app.include_router(inbox_router(deps.actions))
    return app
