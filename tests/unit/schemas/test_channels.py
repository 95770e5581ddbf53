"""One channel list and one Priority (schemas/channels.py); the lists that can't derive match it."""

from __future__ import annotations

import typing

import catalog
from catalog.channels import SPECS
from catalog.models import REACHES, RENDERABLE_CHANNELS
from schemas.channels import CHANNELS, Channel, Priority
from schemas.notification import Notification
from schemas.providers import ChannelsSettings


def test_channels_are_the_literal_in_its_order() -> None:
    assert typing.get_args(Channel) == CHANNELS
    assert CHANNELS == ("email", "sms", "push", "webpush", "slack", "webhook", "inapp")


def test_the_settings_have_one_field_per_channel() -> None:
    assert set(ChannelsSettings.model_fields) - {"breaker"} == set(CHANNELS)


def test_the_catalog_renders_every_channel_and_names_the_same_list() -> None:
    assert tuple(SPECS) == CHANNELS
    assert catalog.KNOWN_CHANNELS is CHANNELS
    assert RENDERABLE_CHANNELS == REACHES["user"] == frozenset(CHANNELS)


def test_one_priority() -> None:
    assert catalog.Priority is Priority
    assert typing.get_args(Notification.model_fields["priority"].annotation) == typing.get_args(
        Priority
    )
    assert catalog.PRIORITIES == ("critical", "high", "normal", "low")


def test_a_notification_naming_another_channel_still_decodes() -> None:
    # Deliver answers it with `no_provider`; a Literal field would make it undecodable instead.
    n = Notification(
        id="n-1", event_id="e-1", event_source="s", event_type="t", rule_id="r", rule_version=1,
        template_id="t", template_version="v", catalog_version="c", channel="pager",
        recipient="x",
    )  # fmt: skip
    assert Notification.decode(n.encode()).channel == "pager"
