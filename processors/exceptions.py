"""Errors every channel processor raises, split by what the deliver stage must do next.

`RetryableSendError` → publish to a retry topic (and count against the provider's breaker);
`PermanentSendError` → dead-letter at once, retrying cannot help.
Each carries a stable, machine-readable `code` that goes into the status event's `error.code`.
"""

from __future__ import annotations

from typing import Any

from schemas.exceptions import TidingsError

__all__ = ["PermanentSendError", "ProcessorError", "RetryableSendError"]


class ProcessorError(TidingsError):
    """Root of every error a channel processor raises on purpose."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor args break Exception's default pickling; errors may
        # cross process boundaries (worker pools), so rebuild from the instance dict.
        return (_restore, (type(self), self.message, dict(self.__dict__)))


class RetryableSendError(ProcessorError):
    """The send may succeed later: connection refused, timeouts, disconnects, SMTP 4xx."""

    def __init__(self, message: str, *, code: str, retry_after_s: float | None = None) -> None:
        super().__init__(message, code=code)
        # None means "the provider gave no hint": the retry policy's backoff decides.
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"retry_after_s={self.retry_after_s!r})"
        )


class PermanentSendError(ProcessorError):
    """Retrying cannot help (bad recipient, invalid address, content refused): dead-letter it."""


def _restore(cls: type[ProcessorError], message: str, state: dict[str, Any]) -> ProcessorError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err
