"""SMTP settings (the email provider; the local sink by default)."""

from __future__ import annotations

from pydantic import SecretStr

from schemas.settings_base import Frozen

__all__ = ["SmtpSettings"]


class SmtpSettings(Frozen):
    """The email provider (the local sink by default)."""

    host: str = "127.0.0.1"
    port: int = 12525
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    use_tls: bool = False
    validate_certs: bool = True
    timeout_s: float = 10.0
    from_address: str = "tidings <notifications@tidings.local>"
    message_id_domain: str = "tidings.local"
