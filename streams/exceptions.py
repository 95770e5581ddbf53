"""Errors of the runtime: one root; aborted transactions, outages and fatal stops apart.

Back-pressure is not an error here: a stage sizes each fetch to the room it has and pauses
its partitions when it has none (`streams.runtime.flow.FlowController`).
"""

from __future__ import annotations

from schemas.exceptions import TidingsError

__all__ = [
    "ConsumerFenced",
    "DependencyDown",
    "FatalStageError",
    "ReadStalled",
    "StageStopping",
    "StreamsError",
    "TopicMissing",
    "TransactionAborted",
]


class StreamsError(TidingsError):
    """Root of every error raised by `streams`."""


class TransactionAborted(StreamsError):
    """The Kafka transaction was aborted: nothing of the batch is visible; rewind and redo it."""


class FatalStageError(StreamsError):
    """The stage can't go on (fenced producer, lost broker authorisation, broken database).

    The process exits non-zero and its supervisor restarts it; committed offsets
    make the restart resume where finished work ends.
    """


class DependencyDown(StreamsError):
    """Postgres or Redis can't be reached or answered with an error: retry later, don't exit.

    `dependency` names it (`postgres`, `redis`); the work that needed it is kept and
    tried again with backoff (`streams.runtime.outage.Outage`).
    """

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(message)
        self.dependency = dependency


class StageStopping(StreamsError):
    """The stage was asked to stop while it waited for a dependency: leave, commit nothing more."""


class ConsumerFenced(StreamsError):
    """The stage's consumer hit a fatal error (e.g. a static member fenced after a broker
    restart): the stage drops what it tracks, builds a new consumer and goes on from the
    committed offsets."""


class TopicMissing(StreamsError):
    """A topic to read (`streams.runtime.reader`) doesn't exist; the message names it."""


class ReadStalled(StreamsError):
    """Reading a topic to its end made no progress for its bound (is Kafka up?), or hit a
    consumer error; the message names the topic/partitions left."""
