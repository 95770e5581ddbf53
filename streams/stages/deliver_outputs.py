"""What a finished dispatch record produces: status events, retry records, dead letters.

Pure builders over the settings, the notification and the input record; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schemas.notification import Notification
from schemas.settings import TidingsSettings
from schemas.status import ErrorInfo, Status, build_status
from streams.runtime.dead_letter import dead_letter
from streams.runtime.kafka import retry_topic
from streams.runtime.output_metrics import CHANNEL_HEADER
from streams.runtime.records import TP, Out
from streams.state import SentRecord

__all__ = [
    "DUE_HEADER",
    "HOLD_HEADER",
    "Item",
    "Outputs",
    "hold_until_ms",
    "park",
    "suppressed_status",
]

# When a parked retry is due (epoch ms); the deliver consumer holds its partition until then.
DUE_HEADER = "tidings-due-ms"
# On a notification held for quiet hours: not to be sent before this (epoch ms).
HOLD_HEADER = "tidings-hold-until-ms"


def hold_until_ms(headers: list[tuple[str, bytes | None]]) -> int | None:
    """The quiet-hours hold a dispatch record carries (epoch ms), if any; unreadable: None."""
    for k, v in headers:
        if k == HOLD_HEADER and v:
            try:
                return int(v)
            except ValueError:
                return None
    return None


def park(settings: TidingsSettings, n: Notification, key: bytes, hold_ms: int, now_ms: int) -> Out:
    """`n` on the longest retry tier, due at its hold or after the tier's delay if sooner.

    Route parks a notification that falls in the recipient's quiet hours so; deliver parks
    it again, a tier's delay at a time, until the hold is over. A long hold so never keeps
    a tier's partition paused longer than the tier's own delay (the records behind it on
    that partition wait at most that long). `attempt` is unchanged: holding is no retry.
    """
    tier = max(settings.runtime.retry_tiers_s)
    due_ms = min(hold_ms, now_ms + int(tier * 1000))
    return Out(
        retry_topic(settings, tier),
        n.encode(),
        key,
        [
            (DUE_HEADER, str(due_ms).encode()),
            (CHANNEL_HEADER, n.channel.encode()),
            (HOLD_HEADER, str(hold_ms).encode()),
        ],
    )


def suppressed_status(
    topic: str, n: Notification, reason: str | None, *, stage: str, now: datetime | None = None
) -> Out:
    """The `suppressed` status of `n` on `topic`, with the reason: what route (the
    recipient's preferences, a cap) and deliver (its re-check) produce for a notification
    they decided not to send."""
    st = build_status(n, "suppressed", stage=stage, now=now, extra={"reason": reason})
    return Out(topic, st.encode(), st.key(), st.headers())


@dataclass(frozen=True, slots=True)
class Item:
    """One dispatch record handed from the consumer thread."""

    tp: TP
    offset: int
    gen: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp_ms: int | None


class Outputs:
    """Builds the deliver stage's output records for one settings tree."""

    def __init__(self, settings: TidingsSettings) -> None:
        self._s = settings

    def status(
        self,
        n: Notification,
        status: Status,
        rec: SentRecord | None = None,
        *,
        error: ErrorInfo | None = None,
        possible_duplicate: bool = False,
    ) -> Out:
        """A status event for `n` (with the send's provider fields when `rec` is given)."""
        st = build_status(
            n, status, stage="deliver", attempt=rec.attempt if rec else n.attempt,
            provider=rec.provider if rec else None,
            provider_message_id=rec.provider_message_id if rec else None, error=error,
            extra={"possible_duplicate": True} if possible_duplicate else None,
        )  # fmt: skip
        return Out(self._s.topics.status, st.encode(), st.key(), st.headers())

    def suppressed(self, n: Notification, reason: str | None) -> Out:
        """The `suppressed` status of a notification deliver decided not to send."""
        return suppressed_status(self._s.topics.status, n, reason, stage="deliver")

    def retry(self, n: Notification, tier_s: float, due_at: float) -> Out:
        """The record that parks `n` on its delay tier's topic until `due_at` (epoch s)."""
        again = n.model_copy(update={"attempt": n.attempt + 1})
        return Out(
            retry_topic(self._s, tier_s),
            again.encode(),
            n.recipient.encode(),
            [(DUE_HEADER, str(int(due_at * 1000)).encode()), (CHANNEL_HEADER, n.channel.encode())],
        )

    def failed(
        self, it: Item, n: Notification, attempt: int, code: str, exc: BaseException
    ) -> list[Out]:
        """A `failed` status and the dead letter of the input record."""
        st = build_status(
            n, "failed", stage="deliver", attempt=attempt,
            error=ErrorInfo(code=code, message=str(exc)[:1000]),
        )  # fmt: skip
        return [
            Out(self._s.topics.status, st.encode(), st.key(), st.headers()),
            self.dlq(it, exc, code),
        ]

    def dlq(self, it: Item, exc: BaseException, reason: str) -> Out:
        """The dead letter of the input record, byte for byte, with the reason."""
        return dead_letter(
            self._s.topics.dlq, topic=it.tp[0], partition=it.tp[1], offset=it.offset,
            timestamp_ms=it.timestamp_ms, key=it.key, value=it.value, headers=it.headers,
            error=exc, stage="deliver", reason=reason,
        )  # fmt: skip
