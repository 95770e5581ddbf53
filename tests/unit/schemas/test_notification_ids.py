"""Notification and status ids: deterministic, and exactly uuid5 of their names."""

from __future__ import annotations

import random
import uuid

from schemas.notification import NAMESPACE, notification_id, stable_id


def test_stable_id_is_uuid5_of_the_name() -> None:
    rng = random.Random(5)
    names = ["", "a", "é\x1f日本", "x" * 1000]
    names += ["".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(60)))
              for _ in range(2000)]  # fmt: skip
    for name in names:
        assert stable_id(name) == str(uuid.uuid5(NAMESPACE, name)), name


def test_notification_id_is_fixed_forever() -> None:
    # A replayed event must get the same ids as before this code changed.
    got = notification_id("svc/orders", "e-1", "order-created", "a@example.com", "email")
    assert got == str(
        uuid.uuid5(NAMESPACE, "svc/orders\x1fe-1\x1forder-created\x1fa@example.com\x1femail")
    )
    assert uuid.UUID(got).version == 5
