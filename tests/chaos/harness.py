"""Run one scenario: world, supervised tidings processes, traffic, the fault, the settle, the
history, the verdict. Everything it starts is stopped in `finally`.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.checker import Report, check
from tests.chaos.history import Fault
from tests.chaos.receipts import Receipts
from tests.chaos.scenarios import Scenario
from tests.chaos.stack import Stack
from tests.chaos.supervisor import Exit, Supervised, tidings_argv
from tests.chaos.traffic import EventSource
from tests.chaos.world import TWILIO_TOKEN, ChaosWorld

__all__ = ["Ctx", "Result", "run_scenario"]

_NOISE = re.compile(r"^\S+ \S+ |\b[0-9a-f]{8}-[0-9a-f-]{27}\b|\d+")


@dataclass
class Result:
    """A scenario's report plus what the supervisors saw."""

    name: str
    seed: int
    report: Report
    wall_s: float
    restarts: dict[str, int] = field(default_factory=dict)
    crashes: list[str] = field(default_factory=list)  # exits we did not cause
    log_lines: list[str] = field(default_factory=list)  # distinct ERROR/WARNING shapes
    logdir: str = ""


@dataclass
class Ctx:
    """What a fault function can use."""

    scenario: Scenario
    stack: Stack
    world: ChaosWorld
    rng: random.Random
    t0: float
    logdir: Path
    sup: dict[str, Supervised] = field(default_factory=dict)
    extras: list[Supervised] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def say(self, msg: str) -> None:
        print(f"  [{time.time() - self.t0:6.1f}s] {msg}", flush=True)

    def sleep_until(self, offset_s: float) -> None:
        time.sleep(max(0.0, self.t0 + offset_s - time.time()))

    def wait_delivered(self, fraction: float, timeout_s: float = 60.0) -> None:
        want = fraction * self.scenario.events
        deadline = time.monotonic() + timeout_s
        while len(self.world.deliveries()) < want and time.monotonic() < deadline:
            time.sleep(0.1)

    def extra(self, name: str, stage: str) -> Supervised:
        """An unsupervised extra member (rebalance storm): it is not restarted."""
        s = Supervised(name, tidings_argv(self.world.config, stage), self.logdir, restart=False)
        self.extras.append(s.start())
        return s


def _guarded(sc: Scenario, ctx: Ctx) -> None:
    try:
        sc.fault(ctx)
    except Exception as exc:
        ctx.errors.append(f"fault {sc.name} raised {type(exc).__name__}: {exc}")
        ctx.say(ctx.errors[-1])


def _argv(world: ChaosWorld, role: str) -> list[str]:
    return tidings_argv(world.config) if role == "all" else tidings_argv(world.config, role)


def _done(world: ChaosWorld, src: EventSource) -> bool:
    delivered = {d.nid for d in world.deliveries()}
    accounted = world.sent_ids()
    exp_ok = all(e.nid in accounted and (e.nid in delivered or e.nid in _unknown(world))
                 for e in src.expected)  # fmt: skip
    dlq = set(world.dlq.items)
    if not (exp_ok and all(p.origin in dlq for p in src.poison)):
        return False
    mine = {e.nid for e in src.expected}
    want = {(s.nid, s.status) for s in world.statuses.items if s.nid in mine}
    audited = world.audited(sorted(mine))
    return audited is not None and want <= audited


def _unknown(world: ChaosWorld) -> set[str]:
    return {s.nid for s in world.statuses.items if s.status == "unknown"}


def _crashes(exits: list[Exit], t0: float) -> list[str]:
    """Exits we did not cause, one line per (process, exit code)."""
    by: dict[tuple[str, int], list[Exit]] = {}
    for e in exits:
        by.setdefault((e.name, e.rc), []).append(e)
    return [f"{name} exited {rc} x{len(es)} (first at +{es[0].t - t0:.1f}s, "
            f"incarnation {es[0].incarnation})" for (name, rc), es in by.items()]  # fmt: skip


def _log_shapes(logs: list[Path], limit: int = 12) -> list[str]:
    shapes: Counter[str] = Counter()
    example: dict[str, str] = {}
    for path in logs:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR " in line or " WARNING " in line or "Traceback" in line:
                key = _NOISE.sub("#", line)[:160]
                shapes[key] += 1
                example.setdefault(key, f"{path.name}: {line[:300]}")
    return [f"x{n} {example[k]}" for k, n in shapes.most_common(limit)]


def run_scenario(sc: Scenario, stack: Stack, base: Path, seed: int) -> Result:
    """Run `sc` once; never raises for a failing pipeline (that is the report's job)."""
    rng = random.Random(f"{seed}:{sc.name}")
    # Timing follows the seed; names never repeat (a rerun with the same seed gets new topics).
    unique = f"{sc.name.replace('-', '')[:16]}{uuid.uuid4().hex[:8]}"
    tmp = base / sc.name
    tmp.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    world = ChaosWorld(stack, tmp, unique, callbacks=sc.callbacks, poison_every=sc.poison_every)
    ctx = Ctx(sc, stack, world, rng, time.time(), tmp)
    receipts: Receipts | None = None
    src: EventSource | None = None
    try:
        for role in sc.roles:
            ctx.sup[role] = Supervised(role, _argv(world, role), tmp).start()
        src = EventSource(world.settings.kafka.client_config(), world.make, sc.events,
                          sc.duration_s).start()  # fmt: skip
        if sc.callbacks:
            email = lambda: {d.nid for d in world.smtp[0].deliveries()}  # noqa: E731
            receipts = Receipts(f"http://127.0.0.1:{world.callbacks_port}", TWILIO_TOKEN,
                                email).start()  # fmt: skip
        ctx.t0 = time.time()
        ctx.say(f"{sc.events} events over {sc.duration_s:.0f} s; roles {', '.join(sc.roles)}")
        fault = threading.Thread(target=_guarded, args=(sc, ctx), name="fault", daemon=True)
        fault.start()
        fault.join(sc.duration_s + 180)
        src.join(300)
        deadline = time.monotonic() + sc.settle_s
        while not _done(world, src) and time.monotonic() < deadline:
            time.sleep(0.5)
        if receipts is not None:
            receipts_deadline = time.monotonic() + 20
            while time.monotonic() < receipts_deadline and len(receipts.acked) < len(
                {d.nid for d in world.smtp[0].deliveries()}
            ):
                time.sleep(0.5)
        ctx.say(f"settled: {len(world.deliveries())} deliveries, {src.acked()} acked events")
    finally:
        if receipts is not None:
            receipts.stop()
        stoppers = [threading.Thread(target=s.stop) for s in (*ctx.sup.values(), *ctx.extras)]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(60)
        world.statuses.settle(idle_s=3.0, timeout_s=30.0)
        world.dlq.settle(idle_s=1.0, timeout_s=10.0)
        logs = [p for s in (*ctx.sup.values(), *ctx.extras) for p in s.logs]
        h = world.history(logs)
        audited = world.audited([e.nid for e in src.expected]) if src else None
        world.close()
    assert src is not None
    h.expected, h.poison, h.faults = list(src.expected), list(src.poison), list(ctx.faults)
    h.audited = audited
    if receipts is not None:
        h.callbacks = list(receipts.acked)
    report = check(h)
    report.notes.extend(ctx.errors)
    if src.failed:
        report.notes.append(f"{len(src.failed)} events not accepted by the broker: "
                            f"{src.failed[:3]}")  # fmt: skip
    if receipts is not None:
        report.notes.append(f"receipts: {len(receipts.acked)} acknowledged; answers "
                            f"{dict(sorted(receipts.answers.items()))}")  # fmt: skip
    if world.webhook.bad_signatures:
        report.notes.append(f"{world.webhook.bad_signatures} webhooks with a bad signature")
    sups = [*ctx.sup.values(), *ctx.extras]
    slow = [f"{s.name} {s.stop_s:.0f} s" for s in sups if s.stop_s and s.stop_s > 20]
    if slow:
        report.notes.append(f"slow SIGTERM: {', '.join(slow)}")
    crashes = _crashes([e for s in sups for e in s.unexpected_exits()], ctx.t0)
    return Result(sc.name, seed, report, time.time() - t_start,
                  {s.name: s.restarts() for s in ctx.sup.values()}, crashes,
                  _log_shapes(logs), str(tmp))  # fmt: skip
