"""The email channel: `EmailProvider`, the SMTP connection pool it sends with, and its MIME.

- `provider`: `EmailProvider`, the channel's Provider (fast MIME first, the stdlib otherwise);
- `smtp`: `SmtpSender` (a pool of reusable SMTP connections; every aiosmtplib error leaves as
  Retryable/PermanentSendError) and `build_message` (a validated stdlib EmailMessage);
- `mime`: `fast_mime`, the bytes of a plain notification mail written directly (`RawMail`);
- `pipelined`: one SMTP transaction in two round trips when the server offers PIPELINING
  (RFC 2920), which `SmtpSender` uses on such servers;
- `unsubscribe`: RFC 8058 one-click List-Unsubscribe links and their signed tokens.

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
from processors.channels.email.unsubscribe import (
    UNSUBSCRIBE_ROUTE,
    InvalidUnsubscribeToken,
    UnsubscribeLinks,
    UnsubscribeToken,
    sign_token,
    verify_token,
)

__all__ = [
    "UNSUBSCRIBE_ROUTE",
    "EmailProvider",
    "InvalidUnsubscribeToken",
    "RawMail",
    "SmtpSender",
    "UnsubscribeLinks",
    "UnsubscribeToken",
    "build_message",
    "can_pipeline",
    "data_payload",
    "envelope_args",
    "fast_mime",
    "pipelined_sendmail",
    "sign_token",
    "verify_token",
]
