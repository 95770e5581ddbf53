"""The channels tidings delivers on, and a notification's priorities: each listed once, here.

`Channel` is the one list of channel names; `CHANNELS` is the same names as a tuple, in this
order wherever tidings enumerates them (dispatch topics, provider chains). The catalog's known
channels, the registry's chains and the topics derive from it. The `channels` settings
(`schemas.providers.ChannelsSettings`, one field per channel) and the catalog's template
specs (`catalog.channels.SPECS`) must name exactly these: tests/unit/schemas/test_channels.py
checks both.

`Priority` is what a rule assigns and a notification carries; it picks the retry budget.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["CHANNELS", "Channel", "Priority"]

Channel = Literal["email", "sms", "push", "webpush", "slack", "webhook", "inapp"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)

Priority = Literal["critical", "high", "normal", "low"]
