"""The deliver stage's I/O half: claims, rendering and provider calls on an asyncio loop.

It runs in its own thread. The consumer thread hands it batches of dispatch
records; for each record it reports one `Completion` (offset, generation and
the output records) on a thread-safe queue. A record whose work is abandoned
(shutdown, lost partition) reports nothing, so its offset is never committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import random
import signal
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from catalog import CatalogError
from processors.exceptions import PermanentSendError, RetryableSendError
from processors.failover import Failover
from processors.provider import Provider
from processors.retry import RetryPolicy
from schemas.notification import Notification
from schemas.settings import TidingsSettings
from schemas.status import ErrorInfo, build_status
from streams.catalog_ref import CatalogRef
from streams.dedup import ClaimStore, SentRecord
from streams.dlq import dead_letter
from streams.exceptions import FatalStageError
from streams.kafka import retry_topic
from streams.records import TP, Out

__all__ = ["DUE_HEADER", "Completion", "DeliverWorker", "Item"]

# When a parked retry is due (epoch ms); the deliver consumer holds its partition until then.
DUE_HEADER = "tidings-due-ms"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Item:
    """One dispatch record handed from the consumer thread."""

    tp: TP
    offset: int
    gen: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp_ms: int | None


@dataclass(slots=True)
class Completion:
    """A finished record: what to produce when its offset is committed."""

    tp: TP
    offset: int
    gen: int
    outs: list[Out]
    counts: dict[str, int] = field(default_factory=dict)


class DeliverWorker:
    """Runs sends concurrently, in order per recipient, at most once per notification."""

    def __init__(
        self,
        settings: TidingsSettings,
        catalog: CatalogRef,
        providers: dict[str, Provider],
        claims: ClaimStore,
        done: queue.SimpleQueue[Completion],
    ) -> None:
        self._s = settings
        self._catalog = catalog
        # Every channel behind a Failover, so per-provider limits and the channel slot apply
        # to providers handed in directly too.
        self._providers = {
            ch: p if isinstance(p, Failover) else Failover(ch, [p]) for ch, p in providers.items()
        }
        self._claims = claims
        self._done = done
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="deliver-io", daemon=True)
        self._sem: asyncio.Semaphore | None = None
        self._tails: dict[tuple[TP, bytes | None], asyncio.Future[None]] = {}
        self._stopping = False
        self._rng = random.Random()
        rt = settings.runtime
        self._policy = RetryPolicy(
            base_s=rt.retry_backoff_s,
            cap_s=max(600.0, rt.retry_backoff_s),
            tiers_s=rt.retry_tiers_s,
            max_attempts=dict(rt.max_attempts),
        )
        self._sends = 0
        self._active = 0  # provider calls in progress
        self._recording = 0  # accepted sends being recorded
        self._frozen = False
        self._killer: asyncio.Future[None] | None = None
        # Claims in progress (notification id → token): their leases are renewed while the
        # send runs, so a slow send is never taken over by another member.
        self._leases: dict[str, str] = {}
        self._heartbeat: asyncio.Future[None] | None = None
        self.fatal: BaseException | None = None

    # ------------------------------------------------------------ thread plumbing

    def start(self) -> None:
        """Start the I/O thread; returns at once."""
        self._thread.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._sem = asyncio.Semaphore(self._s.runtime.send_concurrency)
        self._heartbeat = self._loop.create_task(self._renew_leases())
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop)

    def submit(self, items: list[Item]) -> None:
        """Hand a batch over (non-blocking); each item later yields one Completion or none."""
        self._call(self._batch(items))

    def stop(self, timeout_s: float) -> None:
        """Abandon what is still waiting, close connections, stop the thread; blocks ≤ timeout."""
        self._stopping = True

        async def shutdown() -> None:
            if self._heartbeat is not None:
                self._heartbeat.cancel()
                await asyncio.gather(self._heartbeat, return_exceptions=True)
            for p in self._providers.values():
                try:
                    await p.close()
                except Exception:  # closing must not mask the reason we stop
                    log.exception("closing provider %s", p.name)
            await self._claims.close()

        fut = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        try:
            fut.result(timeout_s)
        except Exception:
            log.exception("deliver worker shutdown")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._loop.close()

    # ------------------------------------------------------------ the work

    async def _batch(self, items: list[Item]) -> None:
        try:
            decoded: list[tuple[Item, Notification]] = []
            for it in items:
                try:
                    decoded.append((it, Notification.decode(it.value or b"")))
                except ValidationError as exc:
                    self._finish(it, [self._dlq(it, exc, "invalid-notification")], dlq=1)
            backstop = await self._claims.known_sent([n.id for _, n in decoded])
            for it, n in decoded:
                key = (it.tp, it.key)
                prev = self._tails.get(key)
                task = asyncio.ensure_future(self._ordered(prev, it, n, backstop.get(n.id)))
                self._tails[key] = task
                task.add_done_callback(functools.partial(self._untail, key))
        except BaseException as exc:
            self._fail(exc)

    def _untail(self, key: tuple[TP, bytes | None], task: asyncio.Future[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _ordered(
        self, prev: asyncio.Future[None] | None, it: Item, n: Notification, sent: SentRecord | None
    ) -> None:
        # Per-recipient order within a partition: wait for the previous one of the same key.
        if prev is not None:
            await asyncio.gather(prev, return_exceptions=True)
        try:
            await self._one(it, n, sent)
        except FatalStageError as exc:
            self._fail(exc)
        except Exception as exc:
            log.exception("deliver: unexpected error on %s/%s/%s", it.tp[0], it.tp[1], it.offset)
            self._fail(exc)

    async def _one(self, it: Item, n: Notification, sent: SentRecord | None) -> None:
        if sent is not None:  # the Postgres backstop knows it: Redis lost its memory
            self._finish(it, [self._status(n, "sent", sent)], dup=1)
            return
        provider = self._providers.get(n.channel)
        # The channel's slot and the process's gate are taken before the claim: a claimed
        # notification must not queue behind a slow provider, or behind other channels, while
        # its lease runs out (a slow provider holds at most its own limit of gate slots).
        slot = provider.slot if provider is not None else contextlib.nullcontext()
        assert self._sem is not None
        while True:  # bounded: by the lease of whoever holds the claim, and by stop
            if self._stopping:
                return  # abandoned: not committed, redone after restart
            async with slot, self._sem:
                if self._stopping:
                    return  # shutdown began while this waited for a slot
                claim = await self._claims.claim(n.id)
                if claim.state == "sent" and claim.sent is not None:
                    # Redis knows the send; Postgres may not, if a crash fell in between.
                    await self._claims.backfill(n.id, n.channel, claim.sent, notification=it.value)
                    self._finish(it, [self._status(n, "sent", claim.sent)], dup=1)
                    return
                if claim.state in ("ours", "taken"):
                    self._leases[n.id] = claim.token
                    try:
                        await self._claimed(it, n, provider, claim.token, claim.state == "taken")
                    finally:
                        self._leases.pop(n.id, None)
                    return
            # Someone else holds the lease (a previous owner mid-send): wait it out.
            await asyncio.sleep(min(claim.retry_after_s, 1.0))

    async def _claimed(
        self, it: Item, n: Notification, provider: Failover | None, token: str, took_over: bool
    ) -> None:
        if provider is None:
            await self._claims.release(n.id, token)
            exc2 = PermanentSendError(
                f"no provider is configured for channel {n.channel!r} in this deliver process; "
                "configure one (docs/channels.md), then `tidings dlq replay --reason no-provider`",
                code="no-provider",
            )
            self._finish(it, self._failed(it, n, n.attempt, "no-provider", exc2), failed=1)
            return
        try:
            content = self._catalog.current.render_content(
                n.template_id, n.channel, {"recipient": n.recipient, **n.variables}, n.locale
            )
        except CatalogError as exc:
            await self._claims.release(n.id, token)
            self._finish(it, self._failed(it, n, n.attempt, "render-error", exc), failed=1)
            return
        rt = self._s.runtime
        attempt = n.attempt
        try:
            if self._frozen:
                await asyncio.Event().wait()  # the fault hook is about to kill us
            self._active += 1
            try:
                result = await provider.send_with(n, content)
                carrier, msgid = result.provider, result.message_id
            finally:
                self._active -= 1
        except Exception as exc:
            await self._claims.release(n.id, token)
            if self._stopping:
                return  # abandoned: not committed, redone after restart
            err: PermanentSendError | RetryableSendError
            if isinstance(exc, PermanentSendError | RetryableSendError):
                err = exc
            else:
                # A bug in a provider adapter: the same input fails the same way, so it is
                # dead-lettered for a replay after the fix instead of stopping every channel.
                log.exception("deliver: unexpected error sending %s via %s", n.id, n.channel)
                err = PermanentSendError(
                    f"unexpected {type(exc).__name__} from the {n.channel} provider: {exc}; "
                    "a bug in the provider adapter: report it, and replay after the fix",
                    code="unexpected-error",
                )
            self._after_failure(it, n, attempt, err)
            return
        rec = SentRecord(carrier, msgid, attempt)
        self._recording += 1
        try:
            await self._claims.record_sent(n.id, token, n.channel, rec, notification=it.value)
        finally:
            self._recording -= 1
        self._sends += 1
        if took_over:
            # The previous holder died mid-send: whether the provider got that send is
            # unknowable (RFC 1047), so this send may be a duplicate. Say so, and count it.
            log.warning(
                "deliver: took over the claim of %s from a sender that died mid-send; "
                "if that send had reached the provider, this one duplicates it "
                "(same Message-ID)", n.id,
            )  # fmt: skip
            self._finish(it, [self._status(n, "sent", rec)], sent=1, claims_taken_over=1)
        else:
            self._finish(it, [self._status(n, "sent", rec)], sent=1)
        if rt.fault_kill_after_sends and self._sends >= rt.fault_kill_after_sends:
            self._freeze_and_kill()

    def _after_failure(
        self, it: Item, n: Notification, attempt: int, exc: PermanentSendError | RetryableSendError
    ) -> None:
        d = self._policy.decide(
            exc, attempt=attempt, priority=n.priority, now=time.time(), rng=self._rng
        )
        if d.outcome == "retry" and d.tier_s is not None and d.due_at is not None:
            # Park it on its delay tier's topic: the main topic never waits for it.
            self._finish(it, [self._retry(n, d.tier_s, d.due_at)], retried=1)
            return
        code = d.error_code or exc.code or "send-failed"
        self._finish(it, self._failed(it, n, attempt, code, exc), failed=1)

    async def _renew_leases(self) -> None:
        # Every third of the lease: a send that outlasts its lease (a slow provider, a long
        # queue for a failover provider) keeps its claim as long as this process lives.
        every = self._s.runtime.claim_lease_s / 3
        while not self._stopping:
            await asyncio.sleep(every)
            try:
                lost = await self._claims.extend(dict(self._leases))
            except FatalStageError as exc:
                self._fail(exc)
                return
            for nid in lost:
                if nid in self._leases:  # not finished meanwhile: someone else holds it now
                    log.warning(
                        "deliver: the claim of %s was taken over while this process was "
                        "sending it (the process stalled past claim_lease_s?)", nid,
                    )  # fmt: skip

    def _freeze_and_kill(self) -> None:
        # Fault injection for crash tests: die at the worst moment, after sends are
        # recorded and before their offsets can be committed. New sends are held and
        # those in flight finish first, so the kill never lands inside a provider call.
        if self._frozen:
            return
        self._frozen = True

        async def kill_when_quiet() -> None:
            for _ in range(10_000):
                if self._active == 0 and self._recording == 0:
                    break
                await asyncio.sleep(0.001)
            os.kill(os.getpid(), signal.SIGKILL)

        self._killer = asyncio.ensure_future(kill_when_quiet())

    # ------------------------------------------------------------ outputs

    def _status(self, n: Notification, status: str, rec: SentRecord) -> Out:
        st = build_status(
            n, "sent", stage="deliver", attempt=rec.attempt, provider=rec.provider,
            provider_message_id=rec.provider_message_id,
        )  # fmt: skip
        return Out(self._s.topics.status, st.encode(), st.key(), st.headers())

    def _retry(self, n: Notification, tier_s: float, due_at: float) -> Out:
        again = n.model_copy(update={"attempt": n.attempt + 1})
        return Out(
            retry_topic(self._s, tier_s),
            again.encode(),
            n.recipient.encode(),
            [(DUE_HEADER, str(int(due_at * 1000)).encode())],
        )

    def _failed(
        self, it: Item, n: Notification, attempt: int, code: str, exc: BaseException
    ) -> list[Out]:
        st = build_status(
            n, "failed", stage="deliver", attempt=attempt,
            error=ErrorInfo(code=code, message=str(exc)[:1000]),
        )  # fmt: skip
        return [
            Out(self._s.topics.status, st.encode(), st.key(), st.headers()),
            self._dlq(it, exc, code),
        ]

    def _dlq(self, it: Item, exc: BaseException, reason: str) -> Out:
        return dead_letter(
            self._s.topics.dlq, topic=it.tp[0], partition=it.tp[1], offset=it.offset,
            timestamp_ms=it.timestamp_ms, key=it.key, value=it.value, headers=it.headers,
            error=exc, stage="deliver", reason=reason,
        )  # fmt: skip

    def _finish(self, it: Item, outs: list[Out], **counts: int) -> None:
        if counts.get("dlq") is None and any(o.topic == self._s.topics.dlq for o in outs):
            counts["dlq"] = 1
        self._done.put(Completion(it.tp, it.offset, it.gen, outs, counts))

    def _fail(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
