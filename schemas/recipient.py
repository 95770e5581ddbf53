"""The recipient directory's records: who a `user:` recipient is and how to reach them.

A `Recipient` is one person (or system) of one tenant: an id, an email and a phone, a
locale and a timezone, free attributes, its channel addresses (`Address`: device tokens,
Web Push subscriptions, Slack and webhook URLs; many per channel where that makes sense)
and its `Preferences`. `RecipientChange` is one record of the recipients topic
(`topics.recipients`, compacted, keyed `<tenant>/<id>`): an upsert carrying the whole
recipient, or a delete (an erasure: the recipient, its addresses and its preferences go).

Bounds (documented in docs/recipients.md) keep one record from costing more than a page:
ids ≤ 256 characters, ≤ 100 addresses, attributes ≤ 16 KiB of JSON, an address ≤ 4 KiB,
≤ 256 entries in each preference list (categories, rules, category x channel cells).
Violations are pydantic ValidationErrors naming the field.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from schemas.channels import CHANNELS

__all__ = [
    "ADDRESS_CHANNELS",
    "MAX_ADDRESSES",
    "MAX_ATTRIBUTES_BYTES",
    "MAX_GRID_ENTRIES",
    "MAX_ID_LENGTH",
    "NO_PREFERENCES",
    "TENANT_DEFAULTS",
    "Address",
    "OptIn",
    "Preferences",
    "QuietHours",
    "Recipient",
    "RecipientChange",
    "TenantDefaults",
    "recipient_key",
    "tenant_defaults_key",
]

MAX_ID_LENGTH = 256
MAX_ADDRESSES = 100
MAX_ATTRIBUTES_BYTES = 16 * 1024
# Entries per preference list (categories, rules, category x channel cells), opt-in included.
MAX_GRID_ENTRIES = 256
_MAX_ADDRESS = 4096

# The channels whose addresses live in `addresses` (email and sms use `email` and `phone`;
# in-app reaches the recipient id itself).
ADDRESS_CHANNELS = ("push", "webpush", "slack", "webhook")


def _no_nul(v: str) -> str:
    # Postgres stores no NUL in text (nor \u0000 in jsonb): refused here, where the writer
    # hears why, not when the recipients stage writes it (a dead letter the writer never sees).
    if "\x00" in v:
        raise ValueError("contains a NUL character (\\x00), which can't be stored: remove it")
    return v


NoNul = AfterValidator(_no_nul)
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), NoNul]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Address(_Model):
    """One channel address of a recipient."""

    channel: Literal["push", "webpush", "slack", "webhook"]
    # push: the device token; webpush: the PushSubscription JSON; slack/webhook: the URL.
    address: Annotated[str, Field(min_length=1, max_length=_MAX_ADDRESS), NoNul]
    # push only: which service the token belongs to, and the app it was issued for.
    platform: Literal["fcm", "apns"] | None = None
    app_id: Annotated[str, Field(max_length=MAX_ID_LENGTH), NoNul] | None = None
    last_seen: datetime | None = None


class QuietHours(_Model):
    """A daily window in the recipient's timezone: `start` to `end`, "22:00" to "07:00"."""

    start: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
    end: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


def _check_channels(v: tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(v) - set(CHANNELS))
    if unknown:
        raise ValueError(f"unknown channel(s) {unknown}: use {', '.join(CHANNELS)}")
    return v


def _check_grid(v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    for cat, chans in v.items():
        unknown = sorted(set(chans) - set(CHANNELS))
        if unknown:
            raise ValueError(
                f"category {cat!r}: unknown channel(s) {unknown}: use {', '.join(CHANNELS)}"
            )
    return v


class _Grid(_Model):
    """The four dimensions of opting out (or back in): categories, channels, rules, and
    category x channel cells; unknown channels refused."""

    categories: Annotated[
        tuple[Annotated[str, Field(max_length=128)], ...], Field(max_length=MAX_GRID_ENTRIES)
    ] = ()
    channels: Annotated[tuple[str, ...], Field(max_length=len(CHANNELS))] = ()
    rules: Annotated[
        tuple[Annotated[str, Field(max_length=MAX_ID_LENGTH)], ...],
        Field(max_length=MAX_GRID_ENTRIES),
    ] = ()
    category_channels: Annotated[
        dict[Annotated[str, Field(max_length=128)], tuple[str, ...]],
        Field(max_length=MAX_GRID_ENTRIES),
    ] = Field(default_factory=dict)

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_channels(v)

    @field_validator("category_channels")
    @classmethod
    def _known_grid(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return _check_grid(v)


class OptIn(_Grid):
    """What a recipient turns back on that the tenant's defaults opt out of.

    Same four dimensions as `Preferences`. An entry lifts a default opt-out when it is at
    least as specific as that opt-out and inside it (a rule lifts its category; a
    category x channel cell lifts its category and its channel); it never lifts the
    recipient's own opt-outs. The table is in docs/recipients.md; the tenant's
    defaults' own `opt_in` means nothing and is ignored.
    """


class Preferences(_Grid):
    """What a recipient opted out of, and when not to be disturbed (Knock's grid).

    `categories`, `channels`, `rules`: names opted out of entirely; `category_channels`:
    category → channels opted out of for that category only; `opt_in`: what the recipient
    turns back on of the tenant's default opt-outs (`OptIn`); `quiet_hours`: the daily
    window (start == end: none, which also switches a tenant default window off).
    Evaluated by `catalog.preferences.decide` (pure), with the tenant's defaults underneath.
    An entry both opted out of and opted in to is refused (say one or the other).
    """

    quiet_hours: QuietHours | None = None
    opt_in: OptIn = Field(default_factory=OptIn)

    @model_validator(mode="after")
    def _no_contradiction(self) -> Preferences:
        o = self.opt_in
        if not (o.categories or o.channels or o.rules or o.category_channels):
            return self  # nothing opted in: nothing can contradict
        both = [
            f"{what} {name!r}"
            for what, out, inn in (
                ("category", self.categories, self.opt_in.categories),
                ("channel", self.channels, self.opt_in.channels),
                ("rule", self.rules, self.opt_in.rules),
            )
            for name in sorted(set(out) & set(inn))
        ]
        for cat, chans in sorted(self.category_channels.items()):
            for ch in sorted(set(chans) & set(self.opt_in.category_channels.get(cat, ()))):
                both.append(f"category x channel {cat}:{ch}")
        if both:
            raise ValueError(
                f"both opted out of and opted in to: {', '.join(both)}; "
                "remove each from one of the two lists"
            )
        return self


NO_PREFERENCES = Preferences()  # shared by every recipient without preferences (frozen)


def _no_preferences() -> Preferences:
    return NO_PREFERENCES


class Recipient(_Model):
    """One recipient of one tenant, as the directory stores it."""

    tenant: Annotated[str, Field(max_length=MAX_ID_LENGTH), NoNul] = ""  # "" = no tenant
    id: Id
    email: Annotated[str, Field(max_length=320), NoNul] | None = None
    phone: Annotated[str, Field(max_length=32), NoNul] | None = None
    locale: Annotated[str, Field(max_length=35), NoNul] | None = None
    timezone: Annotated[str, Field(max_length=64), NoNul] | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    addresses: Annotated[tuple[Address, ...], Field(max_length=MAX_ADDRESSES)] = ()
    preferences: Preferences = Field(default_factory=_no_preferences)

    @field_validator("preferences", mode="wrap")
    @classmethod
    def _shared_none(cls, v: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # Most recipients set no preferences: the shared instance instead of building and
        # checking an empty grid for every recipient read (~10 µs each).
        if isinstance(v, dict) and not v:
            return NO_PREFERENCES
        return handler(v)

    @field_validator("attributes")
    @classmethod
    def _bounded_attributes(cls, v: dict[str, Any]) -> dict[str, Any]:
        if _surely_small(v):
            # The common few short values: no need to serialise them to know.
            if any("\x00" in k or (isinstance(x, str) and "\x00" in x) for k, x in v.items()):
                raise ValueError("attributes contain a NUL character (\\x00): remove it")
            return v
        text = json.dumps(v, separators=(",", ":"), default=str)
        if len(text) > MAX_ATTRIBUTES_BYTES:
            raise ValueError(
                f"attributes are {len(text)} bytes of JSON; at most {MAX_ATTRIBUTES_BYTES}"
            )
        if "\\u0000" in text:
            raise ValueError("attributes contain a NUL character (\\x00): remove it")
        return v

    def key(self) -> bytes:
        """The recipients topic's record key: `<tenant>/<id>`."""
        return recipient_key(self.tenant, self.id)

    def addresses_on(self, channel: str) -> list[str]:
        """This recipient's addresses on `channel`, in order (email/sms: the one field)."""
        if channel == "email":
            return [self.email] if self.email else []
        if channel == "sms":
            return [self.phone] if self.phone else []
        if channel == "inapp":
            return [self.id]
        return [a.address for a in self.addresses if a.channel == channel]


_SCALARS = (bool, int, float, type(None))


def _surely_small(v: dict[str, Any]) -> bool:
    """True when `v` is flat and short enough that its JSON is surely under the bound."""
    # At most 8 entries of string keys and scalar or string values; every character counted
    # as 6 (the longest JSON escape, \uXXXX), and 24 more per entry for the rest.
    if len(v) > 8:
        return False
    total = 0
    for k, x in v.items():
        if not isinstance(k, str):
            return False
        if isinstance(x, str):
            total += len(x)
        elif not isinstance(x, _SCALARS):
            return False
        total += len(k)
    return total * 6 + 24 * len(v) < MAX_ATTRIBUTES_BYTES


def recipient_key(tenant: str | None, rid: str) -> bytes:
    """`<tenant>/<id>` (an empty tenant: `/<id>`), the key of one recipient's records."""
    return f"{tenant or ''}/{rid}".encode()


def tenant_defaults_key(tenant: str | None) -> bytes:
    """`<tenant>/` (no recipient has an empty id): the key of a tenant's defaults records."""
    return f"{tenant or ''}/".encode()


# The record type of a tenant's defaults on the recipients topic.
TENANT_DEFAULTS: Final = "tidings.tenant.defaults"


class TenantDefaults(BaseModel):
    """A tenant's default preferences (under every recipient's own) and the categories it
    requires (they go past opt-outs): the `data` of a `tidings.tenant.defaults` record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # No `/`: the key `<tenant>/` would be a recipient's `<a>/<b/>` too (compaction keeps one).
    tenant: Annotated[str, Field(max_length=MAX_ID_LENGTH, pattern=r"^[^/]*$")] = ""
    preferences: Preferences = NO_PREFERENCES
    required_categories: Annotated[
        tuple[Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)], ...],
        Field(max_length=MAX_GRID_ENTRIES),
    ] = ()


class RecipientChange(BaseModel):
    """One record of the recipients topic: a CloudEvent whose type says what changes.

    `tidings.recipient.upserted` carries the whole recipient in `data` (it replaces what was
    there); `tidings.recipient.deleted` carries `{"tenant": …, "id": …}` and erases it;
    `tidings.tenant.defaults` carries a `TenantDefaults` (it replaces the tenant's), keyed
    `<tenant>/`.
    """

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    source: Annotated[str, Field(min_length=1, max_length=1024)]
    type: Literal[
        "tidings.recipient.upserted", "tidings.recipient.deleted", "tidings.tenant.defaults"
    ]
    time: datetime | None = None
    data: dict[str, Any]

    def recipient(self) -> Recipient:
        """The upserted recipient; raises pydantic.ValidationError on a bad one."""
        return Recipient.model_validate(self.data)

    def tenant_defaults(self) -> TenantDefaults:
        """The tenant defaults of a `tidings.tenant.defaults` record; raises ValidationError."""
        return TenantDefaults.model_validate(self.data)

    def target(self) -> tuple[str, str]:
        """(tenant, id) this change is about; raises ValueError when `data` lacks an id."""
        rid, tenant = self.data.get("id"), self.data.get("tenant") or ""
        if not isinstance(rid, str) or not rid or len(rid) > MAX_ID_LENGTH:
            raise ValueError(f"data.id must be a string of 1..{MAX_ID_LENGTH} characters")
        if not isinstance(tenant, str) or len(tenant) > MAX_ID_LENGTH:
            raise ValueError(f"data.tenant must be a string of at most {MAX_ID_LENGTH} characters")
        return tenant, rid
