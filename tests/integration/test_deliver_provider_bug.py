"""A provider adapter that raises something other than a send error (a bug) dead-letters that
one notification with `unexpected_error`; the deliver stage keeps delivering the rest."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest

from processors.channels.email import EmailProvider
from schemas.content import Content
from schemas.notification import Notification
from streams.app import _catalog
from streams.runtime.metrics import Metrics
from streams.runtime.stage import StageContext
from streams.stages.deliver import DeliverStage
from tests.integration.pipeline import World, wait_until

pytestmark = pytest.mark.integration


class _Buggy:
    """Email that crashes with a TypeError for one recipient and sends the others for real."""

    channel = "email"
    name = "buggy"

    def __init__(self, real: EmailProvider, poison: str) -> None:
        self._real = real
        self._poison = poison

    async def send(self, n: Notification, content: Content) -> str:
        if n.recipient == self._poison:
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
        return await self._real.send(n, content)

    async def close(self) -> None:
        await self._real.close()


def test_a_provider_bug_dead_letters_one_notification_and_the_stage_goes_on(
    make_world_with: Callable[..., World],
) -> None:
    w = make_world_with()
    s = w.settings
    poison = f"poison.{w.unique}@example.com"
    docs = [w.order_event(i) for i in range(10)] + [w.order_event(99, email=poison)]
    expected = w.send([(d, "structured") for d in docs])
    bad = expected[-1]
    stop, metrics = threading.Event(), Metrics()
    ref = _catalog(s)
    stage = DeliverStage(
        StageContext(s, stop, metrics, catalog=ref),
        providers={"email": _Buggy(EmailProvider(s.smtp), poison)},
    )
    t = threading.Thread(target=stage.run, name="deliver")
    with w.pipeline(("route",)):
        t.start()
        try:
            got = w.wait_mail(10)
            wait_until(lambda: metrics.snapshot().get("failed", 0) >= 1, 60, "the dead letter")
            assert t.is_alive(), "the stage survived the provider's bug"
        finally:
            stop.set()
            t.join(60)
            ref.stop()
    assert got == Counter({nid: 1 for nid in expected[:-1]})
    [dead] = w.read(s.topics.dlq)
    h = {k: (v or b"").decode() for k, v in dead.headers()}
    assert h["tidings-dlq-reason"] == "unexpected_error"
    assert "TypeError" in h["kafka_dlt-exception-message"]
    assert w.statuses()[(bad, "failed")] == 1
