"""python-socketio's Redis manager with a disconnect that costs the client's rooms, not the
process's.

`AsyncRedisManager.basic_disconnect` (python-socketio 5.x) copies every room of the
namespace and tests the leaving client against each, for every disconnect: with 10,000
clients, each in a room of its own, 10,000 disconnects took 54 CPU s and held the event loop
that long (bench `gateway-sockets-10k`). This subclass keeps which rooms each client is in
(every enter and leave goes through `basic_enter_room` / `basic_leave_room`) and leaves just
those; the rest of the disconnect is the base class's, unchanged.
"""

from __future__ import annotations

from typing import Any

import socketio

__all__ = ["IndexedRedisManager"]


class IndexedRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """`socketio.AsyncRedisManager`, with O(client's rooms) disconnects."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._joined: dict[tuple[str, str], set[Any]] = {}  # (namespace, sid) -> rooms

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._joined.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self._joined.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._joined[(namespace, sid)]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        for room in list(self._joined.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        # Nothing of the client is left in any room, so the base class's scan would find
        # nothing to leave; it is copying the namespace's room map that costs, so it scans an
        # empty one, and does the rest (callbacks, pending lists) as ever.
        rooms = self.rooms.get(namespace, {})
        self.rooms[namespace] = {}
        try:
            super().basic_disconnect(sid, namespace, **kwargs)
        finally:
            if rooms:
                self.rooms[namespace] = rooms
            else:
                self.rooms.pop(namespace, None)
