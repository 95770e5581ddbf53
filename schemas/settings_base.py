"""The base of every settings section: frozen, unknown keys refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Frozen"]


class Frozen(BaseModel):
    """A settings section: immutable, and a typo is an error rather than a silent default."""

    model_config = ConfigDict(frozen=True, extra="forbid")
