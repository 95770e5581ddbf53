"""Pydantic contracts of tidings: envelope, notification, status event, settings."""

from schemas.settings import TidingsSettings, load_settings

__all__ = ["TidingsSettings", "load_settings"]
