"""Deliver's second look at preferences: a recipient that changed since route decided.

Route decides on a recipient's preferences and addresses when it routes (`resolve`), and
stamps each directory notification with that instant (`Notification.routed_ms`). Between
route and the send there may be a backlog, a retry or a quiet-hours hold; a recipient may
opt out, lose a device, change its email or be erased meanwhile. So deliver asks, once per
batch and in one Postgres round trip, which of the batch's recipients were written (or
their tenant's defaults) since their notification was routed (`Directory.changed_since`);
only those are read again (one `lookup`, one `tenant_defaults`) and decided again here by
`recheck`, a pure function. A batch without directory notifications costs nothing.

What `recheck` answers, for one notification:

- the recipient is gone (erased): `suppress`, reason `no-address` (in-app excepted: its id
  is its inbox);
- the address it was routed to is no longer the recipient's on that channel (a device
  removed, an email changed): `suppress`, reason `address-changed`;
- otherwise the preference decision (`catalog.preferences.decide`) as route would make it
  now: an opt-out suppresses it (`opt-out:…`), quiet hours hold it, a bypass sends it.

Caps are not counted again: route already took the notification's share of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from catalog.preferences import Decision, decide
from schemas.notification import Notification
from schemas.recipient import Preferences, Recipient
from streams.stages.resolve import NO_ADDRESS
from streams.state import Directory

__all__ = ["ADDRESS_CHANGED", "PreferenceRecheck", "recheck"]

ADDRESS_CHANGED = "address-changed"

_SEND = Decision("send")


def recheck(
    n: Notification,
    recipient: Recipient | None,
    defaults: Preferences | None,
    required_categories: Sequence[str],
    now: datetime,
) -> Decision:
    """What to do with `n` given its recipient's record now; pure, never raises."""
    if recipient is None:
        return _SEND if n.channel == "inapp" else Decision("suppress", reason=NO_ADDRESS)
    if n.recipient not in recipient.addresses_on(n.channel):
        return Decision("suppress", reason=ADDRESS_CHANGED)
    return decide(
        recipient.preferences, defaults, required_categories=required_categories,
        rule_id=n.rule_id, category=n.category, channel=n.channel,
        critical=n.priority == "critical", timezone=recipient.timezone, now=now,
    )  # fmt: skip


class PreferenceRecheck:
    """The batch check over the directory (sync; run on a worker thread)."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    async def decisions(self, batch: Sequence[Notification]) -> dict[str, Decision]:
        """Notification id → decision, for the batch's notifications whose recipient changed
        since route decided and that are not to be sent now (`suppress` or `hold`).

        Raises DependencyDown when Postgres is unreachable (the caller retries).
        """
        seen = [(n.tenant or "", n.user, n.routed_ms) for n in batch
                if n.user is not None and n.routed_ms is not None]  # fmt: skip
        if not seen:
            return {}
        return await asyncio.to_thread(self._decide, batch, seen)

    def _decide(
        self, batch: Sequence[Notification], seen: list[tuple[str, str, int]]
    ) -> dict[str, Decision]:
        changed = self._directory.changed_since(seen)
        if not changed:
            return {}
        found = self._directory.lookup(changed)
        tenants = self._directory.tenant_defaults({t for t, _ in changed})
        now = datetime.now(UTC)
        out: dict[str, Decision] = {}
        for n in batch:
            key = (n.tenant or "", n.user or "")
            if n.user is None or key not in changed:
                continue
            defaults, required = tenants.get(key[0], (None, ()))
            d = recheck(n, found.get(key), defaults, required, now)
            if d.outcome != "send":
                out[n.id] = d
        return out
