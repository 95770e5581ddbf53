"""What the deliver worker tells operators: trace spans, trace headers, metric labels, log fields.

Small functions over the worker's records, so the worker's own module stays about sends:

- `traced(tracing, group, it, n, work)`: runs one record's work with its CONSUMER span
  current (child of the context its headers carry), or plainly when tracing is off;
- `provider_span(tracing, n)`: the CLIENT span of one provider call;
- `trace_headers(tracing, it)`: what its outputs carry on (the current span, else the
  record's own `traceparent`);
- `watch_breakers(providers)`: every provider's breaker as `tidings_breaker_state`;
- `failed_provider(fo)` and `where(it, n)`: a failed send's provider label, a log line's
  `extra=` fields.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from processors.breaker import CircuitBreaker
from processors.failover import Failover
from schemas.notification import Notification
from streams.observe.metric_defs import BREAKER_STATE, BREAKER_STATES
from streams.observe.tracing import Tracing, carried, context_of, span_headers
from streams.stages.deliver_outputs import Item

__all__ = [
    "failed_provider",
    "provider_span",
    "trace_headers",
    "traced",
    "watch_breakers",
    "where",
]


async def traced(
    tracing: Tracing, group: str, it: Item, n: Notification, work: Callable[[], Awaitable[None]]
) -> None:
    """Await `work()` with the record's CONSUMER span current (no span without a tracer)."""
    if tracing.tracer is None:
        await work()
        return
    parent = context_of(it.headers)
    if (
        parent is not None
        and not trace.get_current_span(parent).get_span_context().trace_flags.sampled
    ):
        # Not sampled upstream: no span (ParentBased would not record one); the outputs
        # pass the record's own context on (`trace_headers`).
        await work()
        return
    span = tracing.consume_span(it.tp[0], it.tp[1], it.offset, it.key, group, parent)
    span.set_attribute("tidings.channel", n.channel)
    span.set_attribute("tidings.notification_id", n.id)
    # Attached in this task's context: the provider span and the outputs' headers are
    # made under it, and no other task sees it.
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        await work()
    finally:
        otel_context.detach(token)
        span.end()


def provider_span(tracing: Tracing, n: Notification) -> contextlib.AbstractContextManager[object]:
    """The CLIENT span of one provider call (a no-op without a tracer)."""
    if tracing.tracer is None or not trace.get_current_span().is_recording():
        return contextlib.nullcontext()
    return tracing.tracer.start_as_current_span(
        f"send {n.channel}", kind=SpanKind.CLIENT,
        attributes={"tidings.channel": n.channel, "tidings.attempt": n.attempt},
    )  # fmt: skip


def trace_headers(tracing: Tracing, it: Item) -> list[tuple[str, bytes]]:
    """What the outputs of `it` carry: the current span's context, or the record's own."""
    if tracing.tracer is not None:
        mine = span_headers(trace.get_current_span())
        if mine:
            return mine
    return [(k, v.encode()) for k, v in carried(it.headers).items()]


def _breaker_value(b: CircuitBreaker) -> float:
    return float(BREAKER_STATES[b.peek()])


def watch_breakers(providers: Iterable[Failover]) -> None:
    """Report every provider's breaker state at each scrape (read then, never pushed)."""
    for fo in providers:
        for name, b in fo.breakers.items():
            BREAKER_STATE.labels(name).set_function(functools.partial(_breaker_value, b))


def failed_provider(fo: Failover) -> str:
    """The provider label of a failed send: the channel's one provider, or `failover`."""
    return fo.providers[0].name if len(fo.providers) == 1 else "failover"


def where(it: Item, n: Notification | None = None) -> dict[str, object]:
    """The `extra=` of a log line about one record: JSON logs carry these as fields."""
    out: dict[str, object] = {"stage": "deliver", "topic": it.tp[0], "partition": it.tp[1],
                              "offset": it.offset}  # fmt: skip
    if n is not None:
        out["notification_id"] = n.id
    return out
