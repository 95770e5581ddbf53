"""Read past events from Kafka for `tidings catalog diff`: assign(), never commit, never send."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from catalog.diff import DiffSummary
from schemas.envelope import Origin, decode_event
from schemas.exceptions import InvalidEventError

__all__ = ["Headers", "Progress", "Start", "parse_from", "replay"]

Headers = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class Start:
    """Where a replay starts: an offset or a timestamp (ms), applied to every partition."""

    topic: str
    offset: int | None = None
    timestamp_ms: int | None = None


def parse_from(text: str) -> Start:
    """`TOPIC@OFFSET` or `TOPIC@ISO-8601`; raises ValueError saying what is accepted."""
    topic, sep, where = text.rpartition("@")
    if not sep or not topic or not where:
        raise ValueError(
            "write TOPIC@OFFSET (e.g. orders@0) or TOPIC@TIMESTAMP (orders@2026-01-05T00:00Z)"
        )
    if where.isdigit():
        return Start(topic, offset=int(where))
    try:
        moment = dt.datetime.fromisoformat(where)
    except ValueError:
        raise ValueError(
            f"{where!r} is neither an offset nor an ISO-8601 timestamp (2026-01-05T08:00:00Z)"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return Start(topic, timestamp_ms=int(moment.timestamp() * 1000))


class Progress:
    """A one-line progress bar on a terminal (silent when `out` is not one, or disabled)."""

    def __init__(self, total: int, out: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.done = max(total, 1), 0
        self.out = out or sys.stderr
        self.enabled = enabled and self.out.isatty()
        self._last = 0.0

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            filled = int(30 * min(self.done, self.total) / self.total)
            bar = "#" * filled + "-" * (30 - filled)
            self.out.write(f"\r[{bar}] {self.done}/{self.total} events")
            self.out.flush()

    def close(self) -> None:
        if self.enabled:
            self.out.write("\n")
            self.out.flush()


def replay(
    records: Iterable[tuple[Origin, bytes | None, Headers]],
    summary: DiffSummary,
    total: int,
    progress: bool = True,
) -> Iterator[tuple[dict[str, Any], dt.datetime]]:
    """Yield (event, record time) for each decodable record of `records`; pure of I/O.

    `records` are (origin, value, headers) as a topic reader hands them over, `total`
    how many to expect (for the progress bar). Undecodable records are counted in
    `summary.undecodable` and skipped.
    """
    bar = Progress(total, enabled=progress)
    try:
        for origin, value, headers in records:
            bar.step()
            try:
                env = decode_event(value, headers, origin)
            except InvalidEventError:
                summary.undecodable += 1
                continue
            ts = origin.timestamp_ms
            moment = (
                dt.datetime.fromtimestamp(ts / 1000, dt.UTC) if ts and ts > 0
                else dt.datetime.now(dt.UTC)
            )  # fmt: skip
            yield env.as_cel(), moment
    finally:
        bar.close()
