"""Channel processors: build and send one notification on one channel, and their shared errors."""

from processors.email import SmtpSender, build_message
from processors.exceptions import PermanentSendError, ProcessorError, RetryableSendError

__all__ = [
    "PermanentSendError",
    "ProcessorError",
    "RetryableSendError",
    "SmtpSender",
    "build_message",
]
