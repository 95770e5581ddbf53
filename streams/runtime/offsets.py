"""Offset tracking: commit only finished work, in order, per partition.

Messages finish out of order (concurrent sends); a partition's committable
offset is the end of its longest finished prefix. A finished message's output
records wait with it, so they are produced in the same transaction that
commits past it: after a crash, a message is either wholly done (outputs and
offset) or wholly redone.
"""

from __future__ import annotations

from collections import OrderedDict

from streams.runtime.records import TP, Out

__all__ = ["OffsetTracker"]

_PENDING = None


class OffsetTracker:
    """In-flight offsets per partition; pure bookkeeping, no I/O."""

    def __init__(self) -> None:
        self._parts: dict[TP, OrderedDict[int, list[Out] | None]] = {}
        self._in_flight = 0
        self._by_topic: dict[str, int] = {}

    def add(self, tp: TP, offset: int) -> None:
        """Register a consumed message as in flight; offsets of a partition must increase."""
        part = self._parts.setdefault(tp, OrderedDict())
        if part and next(reversed(part)) >= offset:
            raise ValueError(f"{tp[0]}/{tp[1]}: offset {offset} added out of order")
        part[offset] = _PENDING
        self._in_flight += 1
        self._by_topic[tp[0]] = self._by_topic.get(tp[0], 0) + 1

    def done(self, tp: TP, offset: int, outputs: list[Out] | None = None) -> None:
        """Mark a message finished with the records it must produce; unknown offsets are ignored."""
        part = self._parts.get(tp)
        if part is None or offset not in part or part[offset] is not _PENDING:
            return  # revoked meanwhile, or already done: nothing to commit for it
        part[offset] = outputs or []
        self._in_flight -= 1
        self._by_topic[tp[0]] -= 1

    def take(self) -> tuple[dict[TP, int], list[Out]]:
        """Pop every finished prefix: (next offset to commit per partition, outputs in order)."""
        offsets: dict[TP, int] = {}
        outs: list[Out] = []
        for tp, part in self._parts.items():
            last = None
            while part:
                first = next(iter(part))
                result = part[first]
                if result is _PENDING:
                    break
                part.popitem(last=False)
                outs.extend(result)
                last = first
            if last is not None:
                offsets[tp] = last + 1
        return offsets, outs

    def revoke(self, tps: list[TP]) -> int:
        """Forget partitions we no longer own; returns how many in-flight messages were dropped."""
        dropped = 0
        for tp in tps:
            part = self._parts.pop(tp, None)
            if part:
                n = sum(1 for v in part.values() if v is _PENDING)
                self._by_topic[tp[0]] -= n
                dropped += n
        self._in_flight -= dropped
        return dropped

    @property
    def in_flight(self) -> int:
        """Messages consumed and not yet finished."""
        return self._in_flight

    def topics_at(self, bound: int) -> set[str]:
        """Topics with at least `bound` messages in flight."""
        return {t for t, n in self._by_topic.items() if n >= bound}

    def pending(self, tp: TP) -> int:
        """Messages of `tp` not yet committed (in flight or waiting behind one)."""
        return len(self._parts.get(tp, ()))

    def partitions(self) -> list[TP]:
        """Partitions with anything tracked."""
        return [tp for tp, part in self._parts.items() if part]
