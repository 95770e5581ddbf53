"""A chaos run's history: what went in, what came out at the peers and on the status topic.

Pure data (no I/O except `takeovers_in`, which reads log files). Times are wall-clock seconds
(`time.time()`), since they come from several processes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "TAKEOVER",
    "Callback",
    "Delivery",
    "Expected",
    "Fault",
    "History",
    "Poison",
    "Status",
    "takeovers_in",
]

# What the deliver stage logs when it resends a notification whose previous sender died mid-send.
TAKEOVER = re.compile(r"deliver: took over the claim of ([0-9a-f]{8}-[0-9a-f-]{27})")


@dataclass(frozen=True, slots=True)
class Expected:
    """A produced event and the notification it must become."""

    event_id: str
    nid: str
    channel: str
    t: float  # when the broker acknowledged the event


@dataclass(frozen=True, slots=True)
class Poison:
    """A record that can't be a notification: it must reach the DLQ (origin = topic/part/off)."""

    origin: str
    shape: str
    t: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """One arrival at a peer (duplicates are separate arrivals)."""

    nid: str
    channel: str
    peer: str
    t: float


@dataclass(frozen=True, slots=True)
class Status:
    """One committed status event (read with isolation.level=read_committed)."""

    nid: str
    status: str
    ce_id: str
    partition: int
    offset: int
    possible_duplicate: bool = False
    t: float = 0.0


@dataclass(frozen=True, slots=True)
class Callback:
    """A provider receipt (Twilio status callback) the callbacks stage acknowledged with 200."""

    nid: str
    t: float


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: `end` is when the fault was over (a kill is over when it happens)."""

    name: str
    start: float
    end: float


@dataclass
class History:
    """Everything one scenario saw; the checker's only input."""

    expected: list[Expected] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    dlq_origins: set[str] = field(default_factory=set)
    # CloudEvent id → reason, for the dead letters of events (an expected one there is lost)
    dlq_events: dict[str, str] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)
    takeovers: set[str] = field(default_factory=set)
    # (notification id, status) rows of the Postgres audit log; None: not read.
    audited: set[tuple[str, str]] | None = None
    faults: list[Fault] = field(default_factory=list)
    # channel → "resend" | "skip"; a channel not named here is "resend" (the default).
    ambiguity: dict[str, str] = field(default_factory=dict)

    def policy(self, channel: str) -> str:
        return self.ambiguity.get(channel, "resend")


def takeovers_in(logs: Iterable[Path]) -> set[str]:
    """Notification ids named by takeover lines in the given tidings log files."""
    found: set[str] = set()
    for path in logs:
        if path.exists():
            found.update(TAKEOVER.findall(path.read_text(errors="replace")))
    return found
