"""The email channel: `EmailProvider`, the SMTP connection pool it sends with, and its MIME.

- `provider`: `EmailProvider`, the channel's Provider (fast MIME first, the stdlib otherwise);
- `smtp`: `SmtpSender` (a pool of reusable SMTP connections; every aiosmtplib error leaves as
  Retryable/PermanentSendError) and `build_message` (a validated stdlib EmailMessage);
- `mime`: `fast_mime`, the bytes of a plain notification mail written directly (`RawMail`);
- `pipelined`: one SMTP transaction in two round trips when the server offers PIPELINING
  (RFC 2920), which `SmtpSender` uses on such servers.

Everything here imports aiosmtplib; nothing else in `processors` does.
"""

from processors.channels.email.mime import RawMail, fast_mime
from processors.channels.email.pipelined import (
    can_pipeline,
    data_payload,
    envelope_args,
    pipelined_sendmail,
)
from processors.channels.email.provider import EmailProvider
from processors.channels.email.smtp import SmtpSender, build_message

__all__ = [
    "EmailProvider",
    "RawMail",
    "SmtpSender",
    "build_message",
    "can_pipeline",
    "data_payload",
    "envelope_args",
    "fast_mime",
    "pipelined_sendmail",
]
