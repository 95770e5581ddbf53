"""The catalog a worker judges events with, swapped atomically on reload.

A stage reads `ref.current` once per batch, so every event of the batch is
judged under one catalog version even while a reload happens.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from catalog import Catalog, CatalogLoadError, load_catalog

__all__ = ["CatalogRef"]

log = logging.getLogger(__name__)


class CatalogRef:
    """Holds the current catalog; `reload` keeps the last good one when the new one is bad."""

    def __init__(self, catalog: Catalog, path: Path | None = None) -> None:
        self._current = catalog
        self._path = path
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> CatalogRef:
        """Load the catalog at `path`; raises CatalogLoadError with every problem."""
        return cls(load_catalog(path), path)

    @property
    def current(self) -> Catalog:
        """The catalog in force (a plain attribute read: atomic)."""
        return self._current

    def reload(self) -> bool:
        """Reload from the path; True if the version changed. Never raises for a bad catalog."""
        if self._path is None:
            return False
        with self._lock:
            try:
                new = load_catalog(self._path)
            except CatalogLoadError as exc:
                log.error("catalog reload refused, keeping %s:\n%s", self._current.version, exc)
                return False
            if new.version == self._current.version:
                return False
            self._current = new
            log.info("catalog switched to version %s", new.version)
            return True
