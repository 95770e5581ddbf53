"""Every: a warning once per interval, not once per request."""

from __future__ import annotations

import time

from streams.state.every import Every


def test_due_once_then_again_after_the_interval() -> None:
    e = Every(0.05)
    assert e.due()
    assert not e.due()
    time.sleep(0.06)
    assert e.due()
    assert not e.due()
