"""Real-time in-app delivery over Socket.IO, shared across gateway processes through Redis.

- **Connect** with `auth: {"token": <recipient token>, "since": <ISO time, optional>}`: the
  token is verified (tokens.py) and the connection joins its recipient's room
  (`<tenant or ->:<recipient>`); a bad token is refused. With `since`, the entries stored
  after it (at most CATCH_UP, oldest first) are sent first: a reconnect fetches what it
  missed, the inbox being the source of truth.
- **Delivery.** The in-app processor stores an entry, then publishes it on Redis
  (`tidings:inbox:<tenant or ->:<recipient>`). Every gateway process pattern-subscribes to
  those channels and emits each entry (`notification`) to its own connections in that room
  only: a recipient connected to two processes gets it once on each connection, never twice
  on one.
- **Receipts.** A client's `seen` / `read` event (`{"id": …}`) marks the entry through the
  same InboxActions as the HTTP inbox (a `seen` / `read` status event first), answers
  `{"changed": [...]}`, and tells the recipient's other connections, on any process, through
  python-socketio's AsyncRedisManager (`changed`).
- **Presence.** While a process holds a connection of a recipient it keeps
  `tidings:presence:<room>` in Redis (TTL 60 s, refreshed every 20 s): online within a
  minute of the last connection going away. `GET /v1/recipients/{id}/presence`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime
from typing import Any, cast

import redis.asyncio as aioredis
import socketio
from fastapi import APIRouter
from redis.exceptions import RedisError

from processors.channels.inapp import DEFAULT_CHANNEL_PREFIX
from schemas.settings import TidingsSettings
from streams.http.gateway.auth import Key
from streams.http.gateway.inbox_api import InboxActions, inbox_entry
from streams.http.gateway.problems import Problem, problem_responses
from streams.http.gateway.socket_manager import IndexedRedisManager
from streams.http.gateway.tokens import RecipientIdentity, verify_recipient_token
from streams.state.presence import PRESENCE_PREFIX, presence_key

__all__ = ["CATCH_UP", "PRESENCE_TTL_S", "Realtime", "room_of"]

log = logging.getLogger(__name__)

CATCH_UP = 200  # entries a reconnect is sent at most (the rest: GET /v1/inbox)
PRESENCE_TTL_S = 60
_PRESENCE_CHUNK = 100  # presence refreshes per Redis round trip


def room_of(me: RecipientIdentity) -> str:
    """The Socket.IO room of a recipient: (tenant, recipient) as JSON, so no tenant or
    recipient name can spell another's room (the Redis channel name can: `a:b` + `c`).
    Its presence key is PRESENCE_PREFIX + the room (= streams.state.presence_key)."""
    return json.dumps([me.tenant or "", me.recipient])


class Realtime:
    """The Socket.IO server and its Redis side; `start()` inside the serving loop."""

    def __init__(self, settings: TidingsSettings, actions: InboxActions) -> None:
        self._s = settings
        self._actions = actions
        url = settings.redis.url.get_secret_value()
        # Bounded: a blackholed Redis must not hang handshakes (presence writes).
        self._redis = aioredis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        # The subscription waits for messages without a read timeout; the health check
        # (a PING every 15 s) notices a half-open connection, and the relay resubscribes.
        self._sub = aioredis.Redis.from_url(
            url, socket_connect_timeout=5.0, health_check_interval=15
        )
        origins = list(settings.gateway.cors_origins)
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=IndexedRedisManager(url, channel="tidings:socketio"),
            cors_allowed_origins=origins or [],
            logger=False,
            engineio_logger=False,
        )
        self._rooms: dict[str, set[str]] = {}  # room -> this process's sids in it
        self._room_of_sid: dict[str, str] = {}  # so a disconnect costs O(1), not O(rooms)
        self._tasks: list[asyncio.Task[None]] = []
        self._catching: set[asyncio.Task[None]] = set()
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self.sio.on("seen", self._seen)
        self.sio.on("read", self._read)

    def asgi(self, app: Any) -> socketio.ASGIApp:
        """`app` with Socket.IO mounted at /socket.io."""
        return socketio.ASGIApp(self.sio, other_asgi_app=app, socketio_path="socket.io")

    async def start(self) -> None:
        """Start relaying the inbox channel and refreshing presence."""
        self._tasks = [
            asyncio.create_task(self._relay(), name="gateway-inbox-relay"),
            asyncio.create_task(self._heartbeat(), name="gateway-presence"),
        ]

    async def close(self) -> None:
        """Stop Engine.IO's background work, the relay and presence; close every Redis
        connection (the manager's too: on uvloop a transport left open keeps the loop's
        close waiting)."""
        with contextlib.suppress(RedisError, OSError):
            await self.sio.shutdown()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await t
        for client in (self._redis, self._sub):
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
        manager = self.sio.manager
        # Its listener first: alive, it would reconnect what is closed below.
        listener = getattr(manager, "thread", None)
        if isinstance(listener, asyncio.Task):
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await listener
        for conn in (getattr(manager, "pubsub", None), getattr(manager, "redis", None)):
            if conn is not None:
                with contextlib.suppress(RedisError, OSError):
                    await conn.aclose()

    # ------------------------------------------------------------ connections

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str):
            raise socketio.exceptions.ConnectionRefusedError("auth.token: a recipient token")
        try:
            me = verify_recipient_token(self._s.gateway, token)
        except Problem as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.detail) from None
        room = room_of(me)
        await self.sio.save_session(sid, {"tenant": me.tenant, "recipient": me.recipient})
        await self.sio.enter_room(sid, room)
        self._rooms.setdefault(room, set()).add(sid)
        self._room_of_sid[sid] = room
        await self._present(room)
        since = auth.get("since")
        if isinstance(since, str):  # after the handshake: its answer goes out first
            task = asyncio.create_task(self._catch_up(sid, me, since))
            self._catching.add(task)
            task.add_done_callback(self._catching.discard)

    async def _catch_up(self, sid: str, me: RecipientIdentity, since: str) -> None:
        try:
            after = datetime.fromisoformat(since)
            rows = await self._actions.inbox.page(
                me.tenant, me.recipient, which="all", limit=CATCH_UP
            )
        except (ValueError, Exception) as exc:  # a bad `since` or Postgres away: live only
            log.warning("gateway: catch-up for %s failed: %s", room_of(me), exc)
            return
        for row in reversed(rows):
            entry = inbox_entry(row)
            if entry.created_at > after:
                await self.sio.emit(
                    "notification", entry.model_dump(mode="json"), to=sid, ignore_queue=True
                )

    async def _disconnect(self, sid: str, *_: Any) -> None:
        room = self._room_of_sid.pop(sid, None)
        if room is None:
            return
        sids = self._rooms.get(room, set())
        sids.discard(sid)
        if not sids:
            self._rooms.pop(room, None)

    async def _me(self, sid: str) -> RecipientIdentity:
        s = await self.sio.get_session(sid)
        return RecipientIdentity(s["tenant"], s["recipient"])

    async def _mark(self, sid: str, action: str, data: Any) -> dict[str, Any]:
        nid = data.get("id") if isinstance(data, dict) else None
        if not isinstance(nid, str):
            return {"error": 'send {"id": "<notification id>"}'}
        me = await self._me(sid)
        try:
            done = await self._actions.apply(me, action, [nid])  # type: ignore[arg-type]
        except Problem as exc:
            return {"error": exc.detail}
        if done.changed:  # the recipient's other tabs and devices, on any process
            await self.sio.emit(
                "changed", {"id": nid, "action": action}, room=room_of(me), skip_sid=sid
            )
        return {"changed": done.changed}

    async def _seen(self, sid: str, data: Any) -> dict[str, Any]:
        return await self._mark(sid, "seen", data)

    async def _read(self, sid: str, data: Any) -> dict[str, Any]:
        return await self._mark(sid, "read", data)

    # ------------------------------------------------------------ Redis

    async def _relay(self) -> None:
        """The in-app processor's publishes → this process's connections in the room."""
        while True:
            pubsub = self._sub.pubsub()
            try:
                await pubsub.psubscribe(f"{DEFAULT_CHANNEL_PREFIX}*")
                async for msg in pubsub.listen():
                    if msg.get("type") != "pmessage":
                        continue
                    try:
                        entry = json.loads(msg["data"])
                        who = RecipientIdentity(entry.get("tenant") or "", entry["recipient"])
                    except (ValueError, KeyError, TypeError, AttributeError):
                        continue
                    room = room_of(who)  # from the entry itself, not the channel's name
                    if room in self._rooms:
                        await self.sio.emit("notification", entry, room=room, ignore_queue=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away, or a bug: live delivery must come back
                log.warning("gateway: the inbox channel dropped (%s); resubscribing in 1 s", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    # Typed from redis-py 8.2 on, untyped before: no ignore fits both.
                    await cast(Any, pubsub).aclose()

    async def _present(self, room: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.set(PRESENCE_PREFIX + room, "1", ex=PRESENCE_TTL_S)

    async def _heartbeat(self) -> None:
        period = PRESENCE_TTL_S / 3
        while True:
            rooms = list(self._rooms)
            chunks = max(1, -(-len(rooms) // _PRESENCE_CHUNK))
            # Spread over the period, a pipelined chunk at a time: all of them at once (one
            # SET, or even one pipeline, per room) held the event loop ~0.2 s every refresh
            # at 10,000 rooms, and live deliveries waited behind it (bench gateway-sockets).
            for i in range(chunks):
                await asyncio.sleep(period / chunks)
                pipe = self._redis.pipeline(transaction=False)
                for room in rooms[i * _PRESENCE_CHUNK : (i + 1) * _PRESENCE_CHUNK]:
                    if room in self._rooms:
                        pipe.set(PRESENCE_PREFIX + room, "1", ex=PRESENCE_TTL_S)
                with contextlib.suppress(RedisError, OSError):
                    await pipe.execute()

    async def online(self, tenant: str, recipient: str) -> bool:
        """Whether any gateway process holds a connection of the recipient (≤ 60 s stale)."""
        try:
            return bool(await self._redis.exists(presence_key(tenant, recipient)))
        except (RedisError, OSError) as exc:
            raise Problem(
                503,
                "Presence unavailable",
                f"Redis unreachable ({exc}); retry",
                headers={"Retry-After": "5"},
            ) from exc

    def router(self) -> APIRouter:
        """`GET /v1/recipients/{id}/presence` (scope recipients:write)."""
        router = APIRouter(tags=["recipients"])

        @router.get(
            "/v1/recipients/{rid}/presence", responses=problem_responses(401, 403, 429, 503)
        )
        async def presence(rid: str, key: Key) -> dict[str, bool]:
            """Whether the recipient has the app open now (a Socket.IO connection)."""
            if not key.allows("recipients:write"):
                raise Problem(403, "Missing scope", "this API key lacks the recipients:write scope")
            return {"online": await self.online(key.tenant, rid)}

        return router
