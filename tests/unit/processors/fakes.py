"""Fakes for the delivery-machinery tests: a settable clock and scripted providers."""

from __future__ import annotations

from collections.abc import Iterable

from processors.exceptions import ProcessorError
from schemas.content import Content, SmsContent
from schemas.notification import Notification


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


class ScriptedProvider:
    """Answers each send with the next scripted error, or success when the script is empty."""

    channel = "sms"

    def __init__(self, name: str, script: Iterable[ProcessorError | None] = ()) -> None:
        self.name = name
        self.script = list(script)
        self.sent: list[str] = []
        self.fail_always: ProcessorError | None = None

    async def send(self, n: Notification, content: Content) -> str:
        err = self.script.pop(0) if self.script else self.fail_always
        if err is not None:
            raise err
        self.sent.append(n.id)
        return f"{self.name}-{n.id}"

    async def close(self) -> None:
        return None


def notification(nid: str = "n-1", **kw: object) -> Notification:
    base: dict[str, object] = {
        "id": nid, "event_id": "e-1", "event_source": "test", "event_type": "order.created",
        "rule_id": "r", "rule_version": 1, "template_id": "t", "template_version": "1",
        "catalog_version": "c", "channel": "sms", "recipient": "+15005550006",
    }  # fmt: skip
    base.update(kw)
    return Notification.model_validate(base)


SMS = SmsContent(text="hi")
