"""IndexedRedisManager: the same rooms as python-socketio's own manager after any sequence of
enters, leaves, closes and disconnects; only cheaper to disconnect. Pure (nothing connects)."""

from __future__ import annotations

import random

import socketio

from streams.http.gateway.socket_manager import IndexedRedisManager

NS = "/"


def _state(m: socketio.AsyncRedisManager) -> dict[object, dict[str, str]]:
    return {room: dict(sids) for room, sids in m.rooms.get(NS, {}).items()}


def test_the_rooms_match_the_base_managers_after_random_operations() -> None:
    rng = random.Random(7)
    ours = IndexedRedisManager("redis://127.0.0.1:1/0", channel="t")
    base = socketio.AsyncRedisManager("redis://127.0.0.1:1/0", channel="t")
    connected: list[str] = []
    for step in range(2000):
        op = rng.random()
        if op < 0.35 or not connected:
            sid = f"s{step}"
            for m in (ours, base):  # what AsyncManager.connect does
                m.basic_enter_room(sid, NS, None, eio_sid=f"e{step}")
                m.basic_enter_room(sid, NS, sid, eio_sid=f"e{step}")
            connected.append(sid)
        elif op < 0.6:
            sid, room = rng.choice(connected), f"room-{rng.randrange(20)}"
            for m in (ours, base):
                m.basic_enter_room(sid, NS, room)
        elif op < 0.75:
            sid, room = rng.choice(connected), f"room-{rng.randrange(20)}"
            for m in (ours, base):
                m.basic_leave_room(sid, NS, room)
        elif op < 0.78:
            room = f"room-{rng.randrange(20)}"
            for m in (ours, base):
                m.basic_close_room(room, NS)
        else:
            sid = connected.pop(rng.randrange(len(connected)))
            for m in (ours, base):
                m.basic_disconnect(sid, NS)
        assert _state(ours) == _state(base), f"step {step}"
    for sid in connected:
        for m in (ours, base):
            m.basic_disconnect(sid, NS)
    assert _state(ours) == _state(base) == {}
    assert not ours._joined, "nothing kept of clients that left"
