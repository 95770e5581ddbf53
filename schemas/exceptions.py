"""The root of every tidings error, and the errors of the contracts layer.

Every package has its own root under `TidingsError`, and keeps "invalid: dead-letter it"
apart from "retry later":

    TidingsError
    ├── SchemaError                       schemas/exceptions.py
    │   └── InvalidEventError             a record that can't be an event: dead-letter it
    ├── CatalogError                      catalog/exceptions.py
    │   ├── CatalogLoadError              a catalog refused at load (file:line problems)
    │   ├── EventError, RuleEvaluationError, RenderError, BundleError
    │   └── CelCompileError, CelEvalError catalog/cel.py
    ├── ProcessorError                    processors/exceptions.py
    │   ├── RetryableSendError            retry later (a tier, then the DLQ)
    │   └── PermanentSendError            never retry: failed / dead-lettered
    └── StreamsError                      streams/exceptions.py
        ├── FatalStageError               the operator must act; the process exits 1
        ├── DependencyDown                Postgres/Redis away: keep the work, retry
        ├── TransactionAborted, ConsumerFenced, StageStopping
        ├── TopicMissing, ReadStalled     reading a topic to its end
        ├── UnknownEventType              streams/stages/route.py
        └── DlqError                      streams/dlq/replay.py

Catch `TidingsError` to catch anything tidings raised on purpose.
"""

from __future__ import annotations

__all__ = ["InvalidEventError", "SchemaError", "TidingsError"]


class TidingsError(Exception):
    """Root of every error tidings raises on purpose; each package's root derives from it."""


class SchemaError(TidingsError):
    """Root of every error raised by `schemas`."""


class InvalidEventError(SchemaError):
    """An inbound message can't be decoded into an event: dead-letter it, never retry.

    `where` names the origin as `topic/partition/offset`; `reason` says what was
    wrong and how the producer can fix it.
    """

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")
