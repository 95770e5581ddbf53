"""Errors of streams.observe: metrics, health, traces, logs, lag."""

from __future__ import annotations

from streams.exceptions import StreamsError

__all__ = ["ObserveError"]


class ObserveError(StreamsError):
    """Observability could not start or answer: a port taken, an endpoint unreachable."""
