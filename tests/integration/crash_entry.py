"""`python -m tests.integration.crash_entry --config FILE --kill-after N [--kill-at M]`: a
deliver stage that SIGKILLs itself at the worst moment, for the crash tests.

The worst moment: N sends are accepted by the provider and recorded (Postgres, Redis),
and their offsets are not committed yet. New sends are held and the ones in flight
finish first, so the kill never lands inside a provider call. The hook is injected
through `run_stages(send_hook=…)`; production code has no such knob.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from schemas.settings import load_settings
from streams.app import run_stages
from streams.runtime.stage import SendControl


class KillAfter:
    """A SendHook that SIGKILLs the process at moment `at` once its count reaches `n`.

    - `recorded`: after `n` recorded sends, hold new ones, then kill once quiet (no
      provider call or record in progress): sends recorded, offsets not committed.
    - `claimed`: hold every send from the first claim on, kill at the `n`-th claim: a batch
      of claims taken and none sent.
    - `accepted`: kill inside the `n`-th provider answer, before its record (and those of
      the answers of the same moment) started: sent, not recorded.
    """

    def __init__(self, n: int, at: str = "recorded") -> None:
        self._n = n
        self._at = at
        self._killer: asyncio.Future[None] | None = None

    def after_claim(self, claims: int, control: SendControl) -> None:
        if self._at != "claimed":
            return
        control.hold_new_sends()
        if claims >= self._n:
            os.kill(os.getpid(), signal.SIGKILL)

    def after_accept(self, accepted: int, control: SendControl) -> None:
        if self._at == "accepted" and accepted >= self._n:
            os.kill(os.getpid(), signal.SIGKILL)

    def after_send(self, sends: int, control: SendControl) -> None:
        if self._at != "recorded" or sends < self._n or self._killer is not None:
            return
        control.hold_new_sends()

        async def kill_when_quiet() -> None:
            for _ in range(10_000):  # at most ~10 s
                if control.quiet():
                    break
                await asyncio.sleep(0.001)
            os.kill(os.getpid(), signal.SIGKILL)

        self._killer = asyncio.ensure_future(kill_when_quiet())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--kill-after", type=int, required=True)
    ap.add_argument("--kill-at", choices=["recorded", "claimed", "accepted"], default="recorded")
    ap.add_argument("stage", nargs="?", default="deliver", choices=["deliver"])
    a = ap.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run_stages(
        load_settings(a.config), ("deliver",), send_hook=KillAfter(a.kill_after, a.kill_at)
    )


if __name__ == "__main__":
    sys.exit(main())
