"""`tidings`: argparse and thin handlers; each subcommand calls into the rooms below."""

from __future__ import annotations

from streams.cli.main import main

__all__ = [
    "main",
]
