"""Every reason and error code tidings emits is spelled one way: lower snake_case.

A code names what went wrong in a status event's `error.code` and in a dead letter's
`tidings-dlq-reason`. Provider codes (`smtp_550`, `http_429`, `invalid_url`, …) come from
the channel processors; the stage-level ones are declared here. Until 2026-12 the stage
codes were spelled with hyphens (`no-provider`, `render-error`); wherever a user types a
code (`tidings dlq replay --reason …`) both spellings are accepted, and dead letters
written with the old spelling still match (`canonical`).
"""

from __future__ import annotations

__all__ = [
    "AMBIGUOUS_TAKEOVER",
    "AUDIT_WRITE_REFUSED",
    "INTERNAL_ERROR",
    "INVALID_EVENT",
    "INVALID_NOTIFICATION",
    "INVALID_RECIPIENT",
    "INVALID_STATUS_EVENT",
    "INVALID_TRIGGER",
    "NO_PROVIDER",
    "OUTPUT_REFUSED",
    "RENDER_ERROR",
    "RETRIES_EXHAUSTED",
    "RULE_ERROR",
    "SEND_FAILED",
    "STAGE_CODES",
    "UNEXPECTED_ERROR",
    "UNKNOWN_TYPE",
    "canonical",
]

INVALID_EVENT = "invalid_event"  # route: the record is not a decodable CloudEvent
UNKNOWN_TYPE = "unknown_type"  # route: no rule listens to its type
RULE_ERROR = "rule_error"  # route: a rule's expression failed on this event
INVALID_TRIGGER = "invalid_trigger"  # route: a tidings.notify event's data or rule is wrong
INVALID_NOTIFICATION = "invalid_notification"  # deliver: a dispatch record that can't decode
RENDER_ERROR = "render_error"  # deliver: its template failed to render
NO_PROVIDER = "no_provider"  # deliver: no provider for its channel in this process
SEND_FAILED = "send_failed"  # deliver: refused by the provider without a code of its own
UNEXPECTED_ERROR = "unexpected_error"  # deliver: a provider adapter raised something unforeseen
RETRIES_EXHAUSTED = "retries_exhausted"  # deliver: the retry tiers ran out
AMBIGUOUS_TAKEOVER = "ambiguous_takeover"  # deliver: `skip` policy after a mid-send crash
INVALID_STATUS_EVENT = "invalid_status_event"  # audit: a status record that can't decode
AUDIT_WRITE_REFUSED = "audit_write_refused"  # audit: Postgres refused the row for good
INVALID_RECIPIENT = "invalid_recipient"  # recipients: a recipients record that can't decode
OUTPUT_REFUSED = "output_refused"  # any stage: the broker refused an output for good
INTERNAL_ERROR = "internal_error"  # any stage: handling raised something unforeseen (a bug)

STAGE_CODES = frozenset(
    {
        INVALID_EVENT, UNKNOWN_TYPE, RULE_ERROR, INVALID_TRIGGER, INVALID_NOTIFICATION,
        RENDER_ERROR, NO_PROVIDER, SEND_FAILED, UNEXPECTED_ERROR, RETRIES_EXHAUSTED,
        AMBIGUOUS_TAKEOVER,
        INVALID_STATUS_EVENT, AUDIT_WRITE_REFUSED, INVALID_RECIPIENT, OUTPUT_REFUSED,
        INTERNAL_ERROR,
    }
)  # fmt: skip


def canonical(code: str) -> str:
    """The one spelling of `code`: `no-provider` and `no_provider` are the same; pure."""
    return code.strip().lower().replace("-", "_")
