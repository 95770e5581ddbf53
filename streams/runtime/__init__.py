"""The stage runtime: Kafka clients, records and offsets, transactions, outages,
member identities, metrics, the dead-letter record format every stage writes, and the
supervisor of worker processes (`tidings run --workers N`).
"""

from __future__ import annotations

from streams.runtime.dead_letter import (
    DLQ_HEADERS,
    DLQ_MAX_MESSAGE_BYTES,
    INTERNAL_ERROR,
    OUTPUT_REFUSED,
    dead_letter,
    header_map,
    reason_for,
    refused_output,
)
from streams.runtime.flow import FlowController
from streams.runtime.heap import HeapFreezer, start_pause_metrics, stop_pause_metrics
from streams.runtime.kafka import (
    StageConsumer,
    consumer_fatal,
    dlq_max_message_bytes,
    ensure_topics,
    make_consumer,
    make_producer,
    pipeline_topics,
    produce,
    raise_dlq_max_message_bytes,
    records,
    retry_topic,
    route_topics,
)
from streams.runtime.member import MemberIdentity, claim_identity
from streams.runtime.metrics import Metrics
from streams.runtime.offsets import OffsetTracker
from streams.runtime.outage import Outage, backoff_s
from streams.runtime.output_metrics import CHANNEL_HEADER, OutputCounter
from streams.runtime.plain_output import TRANSIENT_COMMIT_ERRORS, commit_sync, produce_all
from streams.runtime.reader import TopicReader, TopicRecord
from streams.runtime.records import TP, Out, RawHeaders, norm_headers
from streams.runtime.stage import SendControl, SendHook, Stage, StageContext, poll_batch
from streams.runtime.transactions import TransactionalOutput
from streams.runtime.workers import Worker, clean_stop, die_with_parent, supervise

__all__ = [
    "CHANNEL_HEADER",
    "DLQ_HEADERS",
    "DLQ_MAX_MESSAGE_BYTES",
    "INTERNAL_ERROR",
    "OUTPUT_REFUSED",
    "TP",
    "TRANSIENT_COMMIT_ERRORS",
    "FlowController",
    "HeapFreezer",
    "MemberIdentity",
    "Metrics",
    "OffsetTracker",
    "Out",
    "Outage",
    "OutputCounter",
    "RawHeaders",
    "SendControl",
    "SendHook",
    "Stage",
    "StageConsumer",
    "StageContext",
    "TopicReader",
    "TopicRecord",
    "TransactionalOutput",
    "Worker",
    "backoff_s",
    "claim_identity",
    "clean_stop",
    "commit_sync",
    "consumer_fatal",
    "dead_letter",
    "die_with_parent",
    "dlq_max_message_bytes",
    "ensure_topics",
    "header_map",
    "make_consumer",
    "make_producer",
    "norm_headers",
    "pipeline_topics",
    "poll_batch",
    "produce",
    "produce_all",
    "raise_dlq_max_message_bytes",
    "reason_for",
    "records",
    "refused_output",
    "retry_topic",
    "route_topics",
    "start_pause_metrics",
    "stop_pause_metrics",
    "supervise",
]
