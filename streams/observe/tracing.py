"""OpenTelemetry traces across Kafka: W3C trace context in headers, one trace per event.

`Tracing.start(settings)` builds a TracerProvider exporting over OTLP/HTTP (protobuf) when
`observe.otlp_endpoint` is set, sampling ParentBased(TraceIdRatio(`trace_sample_ratio`)):
an incoming `traceparent` decides for its own trace, new traces are kept at the ratio.
Without an endpoint there is no tracer, and no span is ever made; the trace context an
event carried is still passed on to what it becomes, so a downstream consumer sees it.

The shape of one event's trace (docs/operations.md#traces):

    producer's span ── process <domain topic>          CONSUMER  (route)
                        └─ publish notification.dispatch.<channel>   PRODUCER (route)
                            └─ process notification.dispatch.<channel>  CONSUMER (deliver)
                                └─ send <channel>                        CLIENT (provider call)

The dispatch record carries the publish span's context; the `queued` status carries the
route span's, and `sent`/`failed` statuses and retry records the deliver span's. Context
travels as `traceparent`/`tracestate` headers; an incoming CloudEvent in binary mode may
carry it as `ce_traceparent` (the CloudEvents distributed-tracing extension).
Attributes follow the OTel messaging semantic conventions for Kafka.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from schemas.settings import TidingsSettings

__all__ = ["TRACE_HEADERS", "Headers", "Tracing", "carried", "context_of", "span_headers"]

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes | None]]
TRACE_HEADERS = ("traceparent", "tracestate")
_CE = {"ce_traceparent": "traceparent", "ce_tracestate": "tracestate"}
_PROPAGATOR = TraceContextTextMapPropagator()


def carried(headers: Headers) -> dict[str, str]:
    """The trace context headers of a record (`ce_` forms mapped to the W3C names); pure."""
    out: dict[str, str] = {}
    for k, v in headers:
        if v is None:
            continue
        if k in TRACE_HEADERS:
            out[k] = v.decode("latin-1")
        elif k in _CE:
            out.setdefault(_CE[k], v.decode("latin-1"))
    return out


def context_of(headers: Headers) -> Context | None:
    """The parent context a record's headers carry, or None when they carry none."""
    c = carried(headers)
    return _PROPAGATOR.extract(c) if c else None


def span_headers(span: trace.Span) -> list[tuple[str, bytes]]:
    """`traceparent` (and `tracestate`) naming `span` as the parent; [] for no valid span."""
    if not span.get_span_context().is_valid:
        return []
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return [(k, v.encode()) for k, v in carrier.items()]


class Tracing:
    """The process's tracer, or none; `shutdown()` flushes what is still buffered."""

    def __init__(self, tracer: Tracer | None, provider: object | None = None) -> None:
        self.tracer = tracer
        self._provider = provider

    @classmethod
    def off(cls) -> Tracing:
        """No tracing: no spans; trace headers are only passed on."""
        return cls(None)

    @classmethod
    def start(cls, settings: TidingsSettings, stage: str) -> Tracing:
        """The tracer for one process; `off()` when no OTLP endpoint is configured."""
        o = settings.observe
        if not o.otlp_endpoint:
            return cls.off()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        provider = TracerProvider(
            resource=Resource.create({"service.name": o.service_name, "tidings.stage": stage}),
            sampler=ParentBased(TraceIdRatioBased(o.trace_sample_ratio)),
        )
        # Bounded: at most 2,048 spans wait for export; beyond that new spans are dropped
        # (counted by the SDK), never buffered without end.
        provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=o.otlp_endpoint, timeout=5),
                max_queue_size=2048, schedule_delay_millis=500,
            )
        )  # fmt: skip
        log.info("observe: traces to %s, sampling %g of new traces", o.otlp_endpoint,
                 o.trace_sample_ratio)  # fmt: skip
        return cls(provider.get_tracer("tidings"), provider)

    def shutdown(self) -> None:
        """Export what is buffered (bounded by the exporter's timeout) and stop."""
        p, self._provider = self._provider, None
        shutdown = getattr(p, "shutdown", None)
        if shutdown is not None:
            shutdown()

    def consume_span(
        self, topic: str, partition: int, offset: int, key: bytes | None, group: str,
        parent: Context | None,
    ) -> trace.Span:  # fmt: skip
        """A started CONSUMER span `process <topic>` for one record (end it yourself)."""
        assert self.tracer is not None
        attrs: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset,
            "messaging.consumer.group.name": group,
        }
        if key is not None:
            attrs["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
        return self.tracer.start_span(
            f"process {topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attrs
        )

    def publish_span(self, topic: str, key: bytes | None, parent: trace.Span) -> trace.Span:
        """A started PRODUCER span `publish <topic>` under `parent` (end it yourself)."""
        assert self.tracer is not None
        attrs: dict[str, str] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": topic,
        }
        if key is not None:
            attrs["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
        return self.tracer.start_span(
            f"publish {topic}", context=trace.set_span_in_context(parent),
            kind=SpanKind.PRODUCER, attributes=attrs,
        )  # fmt: skip
