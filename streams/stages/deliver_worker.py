"""The deliver stage's I/O half: claims, rendering and provider calls on an asyncio loop.

It runs in its own thread. The consumer thread hands it batches of dispatch
records; for each record it reports one `Completion` (offset, generation and
the output records) on a thread-safe queue. A record whose work is abandoned
(shutdown, lost partition) reports nothing, so its offset is never committed.

Postgres or Redis unreachable never stops it: the record that needed them waits and
tries again with backoff (`streams.runtime.outage`), in-flight work fills up, and the
consumer pauses its partitions until they are back. An accepted send is recorded in
Postgres before anything else happens to it, and recording is retried even while
stopping (bounded), so a stop never forgets a send the provider took.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from catalog import CatalogError
from catalog.preferences import Decision
from processors.exceptions import PermanentSendError, RetryableSendError
from processors.failover import Failover
from processors.provider import Provider
from processors.retry import RetryPolicy
from schemas import codes
from schemas.notification import Notification
from schemas.settings import TidingsSettings
from schemas.status import ErrorInfo
from streams.exceptions import DependencyDown, FatalStageError, StageStopping
from streams.observe.metric_defs import (
    CLAIMS_TAKEN_OVER,
    EVENT_TO_SENT,
    SEND_DURATION,
    SENDS,
    child,
)
from streams.observe.tracing import Tracing
from streams.runtime.dead_letter import reason_for
from streams.runtime.metrics import Metrics
from streams.runtime.outage import Outage
from streams.runtime.records import TP, Out
from streams.runtime.stage import SendHook
from streams.stages.deliver_observe import (
    failed_provider,
    provider_span,
    trace_headers,
    traced,
    watch_breakers,
    where,
)
from streams.stages.deliver_outputs import DUE_HEADER, Item, Outputs, hold_until_ms, park
from streams.stages.deliver_recheck import PreferenceRecheck
from streams.state import ClaimStore, SentRecord
from streams.state.catalog import CatalogRef

__all__ = ["DUE_HEADER", "Completion", "DeliverWorker", "Item"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class Completion:
    """A finished record: what to produce when its offset is committed."""

    tp: TP
    offset: int
    gen: int
    outs: list[Out]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A send the provider accepted, not yet recorded."""

    rec: SentRecord
    at: float  # event-loop time of the provider's answer
    took_over: bool


# A record, decoded; its backstop row; deliver's own preference decision, if it differs.
_Job = tuple[Item, Notification, SentRecord | None, Decision | None]


class DeliverWorker:
    """Runs sends concurrently, in order per recipient, at most once per notification."""

    def __init__(
        self,
        settings: TidingsSettings,
        catalog: CatalogRef,
        providers: dict[str, Provider],
        claims: ClaimStore,
        done: queue.SimpleQueue[Completion],
        *,
        metrics: Metrics | None = None,
        slot: str | None = None,
        send_hook: SendHook | None = None,
        tracing: Tracing | None = None,
        recheck: PreferenceRecheck | None = None,
    ) -> None:
        self._s = settings
        self._recheck = recheck
        self._send_hook = send_hook
        self._tracing = tracing or Tracing.off()
        self._metrics = metrics or Metrics()
        self._slot = slot  # this member's stable identity: retire a dead predecessor at once
        self._out = Outputs(settings)
        limit = settings.runtime.outage_limit_s
        self._outages = {
            dep: Outage("deliver", dep, limit_s=limit, metrics=self._metrics)
            for dep in ("postgres", "redis")
        }
        self._catalog = catalog
        # Every channel behind a Failover, so per-provider limits and the channel slot apply
        # to providers handed in directly too.
        self._providers = {
            ch: p if isinstance(p, Failover) else Failover(ch, [p]) for ch, p in providers.items()
        }
        watch_breakers(self._providers.values())
        self._claims = claims
        self._done = done
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="deliver-io", daemon=True)
        self._sem: asyncio.Semaphore | None = None
        # One task per (partition, recipient) chain, not one per record: it sends the chain's
        # records in order, and ends when the chain is empty.
        self._chains: dict[tuple[TP, bytes | None], deque[_Job]] = {}
        self._chain_tasks: set[asyncio.Task[None]] = set()
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
        self._claimed = 0  # claims taken (ours or taken over), for the send hook
        self._accepted = 0  # provider answers, for the send hook
        self._active = 0  # provider calls in progress
        self._recording = 0  # accepted sends being recorded
        self._frozen = False  # a send hook holds new sends
        # Claims in progress (notification id → token): their leases are renewed while the
        # send runs, so a slow send is never taken over by another member.
        self._leases: dict[str, str] = {}
        self._heartbeat: asyncio.Future[None] | None = None
        self._alive: asyncio.Event | None = None  # set once our liveness key exists
        self._stop_at: float | None = None
        self.fatal: BaseException | None = None

    # ------------------------------------------------------------ thread plumbing

    def start(self) -> None:
        """Start the I/O thread; returns at once."""
        self._thread.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._sem = asyncio.Semaphore(self._s.runtime.send_concurrency)
        self._alive = asyncio.Event()
        self._heartbeat = self._loop.create_task(self._beat())
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop)

    def submit(self, items: list[Item]) -> None:
        """Hand a batch over (non-blocking); each item later yields one Completion or none."""
        self._call(self._batch(items))

    def stop(self, timeout_s: float) -> None:
        """Abandon what is still waiting, close connections, stop the thread; blocks ≤ timeout."""
        self._stopping = True
        self._stop_at = time.monotonic()

        async def shutdown() -> None:
            # Provider calls in progress finish and what they sent is recorded before anything
            # closes (bounded): closed under a call, a send could be accepted and never known.
            for _ in range(int(timeout_s * 100)):
                if not self._recording and not self._active:
                    break
                await asyncio.sleep(0.01)
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
            fut.result(timeout_s + 10)
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
                except MemoryError:
                    raise  # the process is in no state to go on: fatal, like in route
                except Exception as exc:  # any bad record is dead-lettered, never fatal
                    reason = reason_for(exc, ValidationError, codes.INVALID_NOTIFICATION)
                    self._finish(it, [self._out.dlq(it, exc, reason)], dlq=1)
            ids = [n.id for _, n in decoded]
            try:
                backstop, decisions = await asyncio.gather(
                    self._until_ok(lambda: self._claims.known_sent(ids)),
                    self._rechecked([n for _, n in decoded]),
                )
            except StageStopping:
                return  # abandoned: not committed, redone after restart
            for it, n in decoded:
                key = (it.tp, it.key)
                job = (it, n, backstop.get(n.id), decisions.get(n.id))
                chain = self._chains.get(key)
                if chain is not None:
                    chain.append(job)  # its task is running: it takes this one in turn
                    continue
                self._chains[key] = deque([job])
                task = asyncio.create_task(self._chain(key))
                self._chain_tasks.add(task)
                task.add_done_callback(self._chain_tasks.discard)
        except BaseException as exc:
            self._fail(exc)

    async def _rechecked(self, batch: list[Notification]) -> dict[str, Decision]:
        if self._recheck is None:
            return {}
        check = self._recheck
        return await self._until_ok(lambda: check.decisions(batch))

    async def _until_ok(
        self,
        call: Callable[[], Awaitable[T]],
        dep_name: str | None = "postgres",
        *,
        record: bool = False,
    ) -> T:
        """Await `call()` until Postgres and Redis let it through, with backoff.

        Raises StageStopping once stopping (for a `record`, only after the drain bound:
        an accepted send must be recorded), FatalStageError past the outage bound.
        """
        while True:
            try:
                result = await call()
            except DependencyDown as exc:
                dep = self._outages.get(exc.dependency) or self._outages["postgres"]
                wait = dep.failed(exc)
                if self._stopping and (
                    not record
                    or time.monotonic() - (self._stop_at or 0) > self._s.runtime.drain_timeout_s
                ):
                    raise StageStopping(str(exc)) from exc
                await asyncio.sleep(wait)
                continue
            if dep_name is not None:
                self._outages[dep_name].ok()
            return result

    async def _chain(self, key: tuple[TP, bytes | None]) -> None:
        # Per-recipient order within a partition: one record of the chain at a time.
        chain = self._chains[key]
        try:
            while chain:
                it, n, sent, decision = chain[0]
                try:
                    if self._tracing.tracer is None:  # no wrapper frame to resume at each await
                        await self._one(it, n, sent, decision)
                    else:
                        work = functools.partial(self._one, it, n, sent, decision)
                        await traced(self._tracing, self._s.groups.deliver, it, n, work)
                except FatalStageError as exc:
                    self._fail(exc)
                except Exception as exc:
                    log.exception(
                        "deliver: unexpected error on %s/%s/%s",
                        it.tp[0],
                        it.tp[1],
                        it.offset,
                        extra=where(it),
                    )
                    self._fail(exc)
                chain.popleft()
        finally:
            # No await between the last popleft and here: a record handed over meanwhile
            # would have been appended to this chain and taken by the loop above.
            if self._chains.get(key) is chain:
                del self._chains[key]

    async def _one(
        self, it: Item, n: Notification, sent: SentRecord | None, decision: Decision | None
    ) -> None:
        hold = hold_until_ms(it.headers)
        now_ms = int(time.time() * 1000)
        if decision is not None and sent is None:
            # The recipient changed since route decided: an opt-out, a lost address, or
            # quiet hours now (streams.stages.deliver_recheck).
            if decision.outcome == "hold" and decision.hold_until is not None:
                until = int(decision.hold_until.timestamp() * 1000)
                key = (n.user or n.recipient).encode()
                self._finish(it, [park(self._s, n, key, until, now_ms)], held=1)
            else:
                self._finish(it, [self._out.suppressed(n, decision.reason)], suppressed=1)
            return
        if hold is not None and hold > now_ms and sent is None:
            # Quiet hours are not over: park it again (route parked it first).
            key = (n.user or n.recipient).encode()
            self._finish(it, [park(self._s, n, key, hold, now_ms)], held=1)
            return
        if sent is not None:  # the Postgres backstop knows it: Redis lost its memory
            self._finish(it, [self._out.status(n, "sent", sent)], dup=1)
            return
        provider = self._providers.get(n.channel)
        # The channel's slot and the process's gate are taken before the claim: a claimed
        # notification must not queue behind a slow provider, or behind other channels, while
        # its lease runs out (a slow provider holds at most its own limit of gate slots).
        slot = provider.slot if provider is not None else contextlib.nullcontext()
        assert self._sem is not None and self._alive is not None
        if not self._alive.is_set():
            await self._alive.wait()  # claims name our member: it must be seen alive first
        token = self._claims.new_token()  # the same for every try: a lost reply is no takeover
        while True:  # bounded: by the lease of whoever holds the claim, and by stop
            if self._stopping:
                return  # abandoned: not committed, redone after restart
            accepted: _Accepted | None = None
            async with slot, self._sem:
                if self._stopping:
                    return  # shutdown began while this waited for a slot
                try:
                    claim = await self._until_ok(lambda: self._claims.claim(n.id, token), "redis")
                    if claim.state == "taken":
                        # Its sender died mid-send; Postgres may know it finished after all.
                        known = await self._until_ok(lambda: self._claims.known_sent([n.id]))
                        if n.id in known:
                            self._finish(it, [self._out.status(n, "sent", known[n.id])], dup=1)
                            return
                    if claim.state == "sent" and claim.sent is not None:
                        # Redis knows the send; Postgres may not, if a crash fell in between.
                        await self._until_ok(
                            functools.partial(
                                self._claims.backfill, n.id, n.channel, claim.sent,
                                notification=it.value,
                            )
                        )  # fmt: skip
                        self._finish(it, [self._out.status(n, "sent", claim.sent)], dup=1)
                        return
                except StageStopping:
                    return  # abandoned: not committed, redone after restart
                if claim.state in ("ours", "taken"):
                    self._leases[n.id] = claim.token
                    self._claimed += 1
                    if self._send_hook is not None:
                        self._send_hook.after_claim(self._claimed, self)
                    outcome: bool | _Accepted = False
                    try:
                        outcome = await self._send_claimed(
                            it, n, provider, claim.token, claim.state == "taken"
                        )
                    finally:
                        if not isinstance(outcome, _Accepted):
                            # Dropped before a release: a renewal in between must not read
                            # the released claim as taken over from us.
                            self._leases.pop(n.id, None)
                    if outcome is True:
                        await self._claims.release(n.id, claim.token)
                    if not isinstance(outcome, _Accepted):
                        return
                    accepted = outcome
            if accepted is not None:
                # The provider answered: its slot is free for the next send while this one is
                # recorded (the lease stays renewed until the `sent|` mark replaces it).
                try:
                    await self._record(it, n, accepted)
                finally:
                    self._leases.pop(n.id, None)
                return
            # Someone else holds the lease (a live member mid-send): wait it out.
            await asyncio.sleep(min(claim.retry_after_s, 1.0))

    async def _send_claimed(
        self, it: Item, n: Notification, provider: Failover | None, token: str, took_over: bool
    ) -> bool | _Accepted:
        """The send itself, under its claim. Returns True when the claim is to be released
        (no send reached the provider: none configured, a render error, a refused send),
        False when it stays (ambiguous after a skipped takeover, or held when the stop cut
        the call off), or the accepted send, to be recorded (`sent|…` then replaces it)."""
        if provider is None:
            exc2 = PermanentSendError(
                f"no provider is configured for channel {n.channel!r} in this deliver process; "
                "configure one (docs/channels.md), then `tidings dlq replay --reason no_provider`",
                code=codes.NO_PROVIDER,
            )
            self._finish(it, self._out.failed(it, n, n.attempt, codes.NO_PROVIDER, exc2), failed=1)
            return True
        if took_over and self._takeover_skips(it, n):
            await self._claims.abandon(n.id, token)
            return False
        try:
            content = self._catalog.current.render_content(
                n.template_id, n.channel, {"recipient": n.recipient, **n.variables}, n.locale
            )
        except CatalogError as exc:
            self._finish(it, self._out.failed(it, n, n.attempt, codes.RENDER_ERROR, exc), failed=1)
            return True
        attempt = n.attempt
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if self._frozen:
                await asyncio.Event().wait()  # held by a send hook (the crash tests kill us next)
            self._active += 1
            started = loop.time()  # after a hold: the provider call alone
            try:
                with provider_span(self._tracing, n):
                    result = await provider.send_with(n, content)
                accepted = _Accepted(
                    SentRecord(result.provider, result.message_id, attempt), loop.time(), took_over
                )
                child(SEND_DURATION, n.channel, result.provider).observe(accepted.at - started)
                # Counted from the provider's answer, with no await in between: a stop waits
                # for this send to be recorded before it closes anything.
                self._recording += 1
                self._accepted += 1
                if self._send_hook is not None:
                    self._send_hook.after_accept(self._accepted, self)
            finally:
                self._active -= 1
        except Exception as exc:
            if self._stopping:
                # Maybe cut off mid-call by the stop: keep the claim, so that a redelivery
                # sees a takeover (flagged, by policy) instead of a clean first send.
                return False  # abandoned: not committed, redone after restart
            err: PermanentSendError | RetryableSendError
            if isinstance(exc, PermanentSendError | RetryableSendError):
                err = exc
            else:
                # A bug in a provider adapter: the same input fails the same way, so it is
                # dead-lettered for a replay after the fix instead of stopping every channel.
                log.exception("deliver: unexpected error sending %s via %s", n.id, n.channel,
                              extra=where(it, n))  # fmt: skip
                err = PermanentSendError(
                    f"unexpected {type(exc).__name__} from the {n.channel} provider: {exc}; "
                    "a bug in the provider adapter: report it, and replay after the fix",
                    code=codes.UNEXPECTED_ERROR,
                )
            SEND_DURATION.labels(n.channel, failed_provider(provider)).observe(
                loop.time() - started
            )
            self._after_failure(it, n, attempt, err, failed_provider(provider))
            return True
        return accepted

    async def _record(self, it: Item, n: Notification, acc: _Accepted) -> None:
        """Record an accepted send (Postgres, and Redis's `sent|` mark) and finish it."""
        # The crash window: from the provider's answer until the first durable record of the
        # send. The Postgres and Redis writes start together, each batched with its peers.
        loop = asyncio.get_running_loop()
        rec = acc.rec
        try:
            redis_at = await self._until_ok(
                lambda: self._claims.record_sent(n.id, n.channel, rec, notification=it.value),
                record=True,
            )
        except StageStopping:
            log.error(
                "deliver: the send of %s was accepted by %s but could not be recorded before "
                "stopping (Postgres down); a redelivery may send it again", n.id, rec.provider,
                extra=where(it, n),
            )  # fmt: skip
            return
        finally:
            self._recording -= 1
        pg_s = loop.time() - acc.at
        redis_s = redis_at - acc.at if redis_at is not None else pg_s
        self._metrics.observe("crash_window_postgres_s", pg_s)
        self._metrics.observe("crash_window_s", min(pg_s, redis_s))
        self._sends += 1
        child(SENDS, n.channel, rec.provider, "sent").inc()
        if n.event_time_ms is not None:
            child(EVENT_TO_SENT, n.channel).observe(max(0.0, time.time() - n.event_time_ms / 1000))
        if acc.took_over:
            CLAIMS_TAKEN_OVER.labels(n.channel).inc()
            self._finish(
                it, [self._out.status(n, "sent", rec, possible_duplicate=True)],
                sent=1, claims_taken_over=1,
            )  # fmt: skip
        else:
            self._finish(it, [self._out.status(n, "sent", rec)], sent=1)
        if self._send_hook is not None:
            self._send_hook.after_send(self._sends, self)

    def _takeover_skips(self, it: Item, n: Notification) -> bool:
        """Log a takeover; with the `skip` policy finish it as `unknown` and return True."""
        # The previous holder died mid-send: whether the provider got that send is
        # unknowable (RFC 1047). The chaos checker pairs this line with duplicates.
        policy = self._s.runtime.ambiguity_for(n.channel)
        log.warning(
            "deliver: took over the claim of %s from a sender that died mid-send; policy %s: %s",
            n.id, policy,
            "resending with the same Message-ID / webhook-id (a possible duplicate)"
            if policy == "resend" else "not resending; status `unknown`", extra=where(it, n),
        )  # fmt: skip
        if policy == "resend":
            return False  # counted as a takeover once the resend is recorded
        CLAIMS_TAKEN_OVER.labels(n.channel).inc()
        SENDS.labels(n.channel, "none", "skipped").inc()
        err = ErrorInfo(
            code=codes.AMBIGUOUS_TAKEOVER,
            message="the previous sender died between the provider call and its record; "
            "whether it was delivered is unknown, and channel policy `skip` forbids a resend",
        )
        self._finish(
            it, [self._out.status(n, "unknown", error=err)], unknown=1, claims_taken_over=1
        )
        return True

    def _after_failure(
        self,
        it: Item,
        n: Notification,
        attempt: int,
        exc: PermanentSendError | RetryableSendError,
        provider: str,
    ) -> None:
        d = self._policy.decide(
            exc, attempt=attempt, priority=n.priority, now=time.time(), rng=self._rng
        )
        retry = d.outcome == "retry" and d.tier_s is not None and d.due_at is not None
        SENDS.labels(n.channel, provider, "retry" if retry else "failed").inc()
        if d.outcome == "retry" and d.tier_s is not None and d.due_at is not None:
            # Park it on its delay tier's topic: the main topic never waits for it.
            self._finish(it, [self._out.retry(n, d.tier_s, d.due_at)], retried=1)
            return
        code = d.error_code or exc.code or codes.SEND_FAILED
        self._finish(it, self._out.failed(it, n, attempt, code, exc), failed=1)

    async def _beat(self) -> None:
        # Every second: our liveness key (a claim of ours is waited out only while it lives).
        # Every third of the lease: the leases of sends in progress, so a send that outlasts
        # its lease (a slow provider) keeps its claim as long as this process lives.
        loop = asyncio.get_running_loop()
        every = self._s.runtime.claim_lease_s / 3
        next_extend = loop.time() + every
        redis = self._outages["redis"]
        handed_over = self._slot is None
        last_beat = loop.time()
        assert self._alive is not None
        while not self._stopping:
            try:
                if not handed_over and self._slot is not None:
                    old = await self._claims.succeed(self._slot)
                    handed_over = True
                    if old and old != self._claims.member:
                        log.info(
                            "deliver: member %s restarted; the claims of its previous "
                            "incarnation %s are taken over at once", self._slot, old,
                        )  # fmt: skip
                await self._claims.beat()
                last_beat = loop.time()
                self._alive.set()
                if loop.time() >= next_extend:
                    next_extend = loop.time() + every
                    for nid in await self._claims.extend(dict(self._leases)):
                        if nid in self._leases:  # not finished meanwhile: someone holds it now
                            log.warning(
                                "deliver: the claim of %s was taken over while this process "
                                "was sending it (the process stalled past its liveness TTL?)",
                                nid,
                            )
                redis.ok()
                await asyncio.sleep(min(1.0, every))
            except DependencyDown as exc:
                if loop.time() - last_beat > self._s.runtime.member_ttl_s / 2:
                    # Our liveness key may lapse: take no new claims that others would see
                    # as a dead member's, until a beat gets through again.
                    self._alive.clear()
                try:
                    wait = redis.failed(exc)
                except FatalStageError as fatal:
                    self._fail(fatal)
                    return
                await asyncio.sleep(min(wait, 1.0))

    # ------------------------------------------------------------ SendControl (for hooks)

    def hold_new_sends(self) -> None:
        """Start no provider call from now on; those in flight finish and are recorded."""
        self._frozen = True

    def quiet(self) -> bool:
        """Whether no provider call and no send record is in progress."""
        return self._active == 0 and self._recording == 0

    # ------------------------------------------------------------ outputs

    def _finish(self, it: Item, outs: list[Out], **counts: int) -> None:
        dlq = self._s.topics.dlq
        if counts.get("dlq") is None and any(o.topic == dlq for o in outs):
            counts["dlq"] = 1
        if th := trace_headers(self._tracing, it):
            # Dead letters keep the input's headers as they were (its trace context among them).
            outs = [o if o.topic == dlq else Out(o.topic, o.value, o.key, [*o.headers, *th])
                    for o in outs]  # fmt: skip
        self._done.put(Completion(it.tp, it.offset, it.gen, outs, counts))

    def _fail(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
