"""A `- user:` match → what route makes of it, once the directory's record is known. Pure.

`resolve(match, recipient, defaults, …)` answers, for one directory recipient:

- the channel and the addresses to send to: the match's channel, or with `first-available`
  the first of its channels where the recipient has an address and no opt-out stops it
  (push: every device token; webpush: every subscription; email/sms: the email/phone field;
  in-app: the recipient id itself);
- or a suppression and its reason (`no-address`, `opt-out:category:marketing`, …): a
  `suppressed` status, never a dead letter;
- or nothing at all, when the rule's `recipient_when` says no for this recipient;
- and, under quiet hours, when to hold the sends until (`hold_until`).

A recipient unknown to the directory has no address but on in-app (its id is its inbox),
where no preference applies either. The preference decision itself is
`catalog.preferences.decide`; the rule's `recipient_when` and recipient variables are
`Catalog.personalize`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from catalog import Catalog, Match
from catalog.preferences import decide
from schemas.recipient import Preferences, Recipient

__all__ = ["NO_ADDRESS", "Resolution", "profile_of", "resolve"]

NO_ADDRESS = "no-address"


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one directory match becomes: sends (channel, addresses) or a suppression."""

    match: Match  # personalized; its channel is the one chosen
    addresses: tuple[str, ...] = ()
    suppressed: str | None = None  # the reason, when nothing is sent
    hold_until: datetime | None = None  # quiet hours: send no earlier than this (UTC)
    bypassed: str | None = None  # critical / required category went past preferences


def profile_of(r: Recipient, online: bool = False) -> dict[str, Any]:
    """The `recipient` a rule's CEL sees: the directory's record without its addresses, and
    `online` (a live connection to a gateway; False unless route looked presence up)."""
    return {
        "online": online,
        "id": r.id,
        "tenant": r.tenant,
        "email": r.email,
        "phone": r.phone,
        "locale": r.locale,
        "timezone": r.timezone,
        "attributes": r.attributes,
    }


def resolve(
    match: Match,
    recipient: Recipient | None,
    *,
    catalog: Catalog,
    envelope: Mapping[str, Any],
    defaults: Preferences | None,
    required_categories: Collection[str],
    now: datetime,
    online: bool = False,
) -> Resolution | None:
    """One directory match resolved; None when `recipient_when` excludes the recipient.

    Raises RuleEvaluationError when the rule's `recipient_when` or a recipient variable
    fails for this recipient (route dead-letters the event, reason `rule_error`).
    """
    if recipient is None:
        if match.channel == "inapp":
            return Resolution(match, (match.recipient,))
        return Resolution(match, suppressed=NO_ADDRESS)
    personal = catalog.personalize(match, envelope, profile_of(recipient, online), now)
    if personal is None:
        return None
    channels = (personal.channel, *personal.fallback_channels)
    first_reason: str | None = None
    for channel in channels:
        addresses = recipient.addresses_on(channel)
        if not addresses:
            first_reason = first_reason or NO_ADDRESS
            continue
        d = decide(
            recipient.preferences, defaults, required_categories=required_categories,
            rule_id=personal.rule_id, category=personal.category, channel=channel,
            critical=personal.priority == "critical", timezone=recipient.timezone, now=now,
        )  # fmt: skip
        if d.outcome == "suppress":
            # An opt-out says more than a missing address on an earlier channel.
            first_reason = d.reason if first_reason in (None, NO_ADDRESS) else first_reason
            continue
        chosen = personal if channel == personal.channel else personal.model_copy(
            update={"channel": channel}
        )  # fmt: skip
        hold = d.hold_until if d.outcome == "hold" else None
        return Resolution(chosen, tuple(addresses), hold_until=hold, bypassed=d.bypassed)
    return Resolution(personal, suppressed=first_reason or NO_ADDRESS)
