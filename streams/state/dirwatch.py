"""Wait for a directory tree to change, at no cost while nothing does.

Linux's inotify (through libc, no dependency) wakes the waiter when a file below the
directory is written, created, deleted or renamed; with no event the waiting thread sleeps
in `select` and costs nothing. Where inotify is unavailable (another OS, the per-user watch
limit reached), `DirWatch` says so and the caller polls instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
from pathlib import Path

__all__ = ["DirWatch"]

log = logging.getLogger(__name__)

_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
# Writes, metadata, creation, deletion and renames of entries, and of the directory itself.
_MASK = (
    0x00000002  # IN_MODIFY
    | 0x00000004  # IN_ATTRIB
    | 0x00000008  # IN_CLOSE_WRITE
    | 0x00000040  # IN_MOVED_FROM
    | 0x00000080  # IN_MOVED_TO
    | 0x00000100  # IN_CREATE
    | 0x00000200  # IN_DELETE
    | 0x00000400  # IN_DELETE_SELF
    | 0x00000800  # IN_MOVE_SELF
)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        lib.inotify_init1  # noqa: B018 - present on Linux only
    except (OSError, AttributeError):
        return None
    return lib


class DirWatch:
    """inotify watches on a directory and every directory below it (hidden ones skipped).

    `available` is False when inotify can't be used: then `wait` returns True at once
    (the caller compares fingerprints, as before). Not thread-safe: one waiter.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._fd = -1
        self._lib = _libc()
        if self._lib is not None:
            fd = self._lib.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                if not self._add_tree():
                    self.close()

    @property
    def available(self) -> bool:
        """Whether changes are seen through inotify (else: poll)."""
        return self._fd >= 0

    def _add_tree(self) -> bool:
        assert self._lib is not None
        # followlinks: a ConfigMap volume's directories are symlinks into `..data`.
        for d, subdirs, _ in os.walk(self._root, followlinks=True):
            subdirs[:] = [s for s in subdirs if not s.startswith(".")]
            wd = self._lib.inotify_add_watch(self._fd, os.fsencode(d), _MASK)
            if wd < 0:
                err = ctypes.get_errno()
                log.warning(
                    "catalog watch: inotify on %s failed (%s); polling the directory instead",
                    d, os.strerror(err),
                )  # fmt: skip
                return False
        return True

    def wait(self, timeout_s: float) -> bool:
        """Block up to `timeout_s`; True if something below the root may have changed."""
        if self._fd < 0:
            return True
        ready, _, _ = select.select([self._fd], [], [], timeout_s)
        if not ready:
            return False
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass
        # A new subdirectory needs its own watch; adding one twice is harmless.
        if not self._add_tree():
            self.close()
        return True

    def close(self) -> None:
        """Drop every watch (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
