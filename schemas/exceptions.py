"""Errors of the contracts layer: one root, and "invalid input" kept apart from everything else."""

from __future__ import annotations

__all__ = ["InvalidEventError", "SchemaError"]


class SchemaError(Exception):
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
