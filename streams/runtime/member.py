"""Stable member identities: the same transactional.id and group.instance.id after a restart.

A stage process that restarts after a crash must take over its dead incarnation's
identity at once: `init_transactions` with the same transactional.id fences the
dead producer and aborts its open transaction immediately (a fresh id would leave
it open until `transaction.timeout.ms`, 60 s, during which read_committed
consumers see nothing behind it), and the same `group.instance.id` (KIP-345, static
membership) gets its partitions back without a rebalance.

Several members of one group may run on one host (tests, `make run`), so the
identity is the host name plus the lowest free *slot*: slot N is held by an
exclusive `flock` on `<local_dir>/members/<group>.<N>.lock`. The kernel drops the
lock when the process dies however it dies, so the restarted process finds the dead
one's slot free and takes it. Set `runtime.instance_id` (e.g. a StatefulSet pod
name) to choose the identity yourself.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MemberIdentity", "claim_identity"]

log = logging.getLogger(__name__)

_MAX_SLOTS = 256


@dataclass
class MemberIdentity:
    """Who this process is within one consumer group; hold it for the process's life."""

    group: str
    instance: str  # stable across restarts: host-slot, or runtime.instance_id
    incarnation: str  # new for every process start
    _fd: int | None = None

    @property
    def transactional_id(self) -> str:
        """The transactional.id of this member's producer."""
        return f"tidings-{self.group}-{self.instance}"

    def release(self) -> None:
        """Give the slot up (a clean stop); a crash releases it too."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100]


def claim_identity(group: str, local_dir: Path, instance_id: str | None = None) -> MemberIdentity:
    """Take this process's identity in `group`; never blocks, never raises.

    With `instance_id` given it is used as is. Otherwise the lowest free slot under
    `local_dir/members`; if that directory can't be used, a per-process identity
    (restarts then wait for the broker's timeouts) with a warning.
    """
    incarnation = uuid.uuid4().hex
    if instance_id:
        return MemberIdentity(group, _safe(instance_id), incarnation)
    host = _safe(socket.gethostname())
    d = local_dir / "members"
    try:
        d.mkdir(parents=True, exist_ok=True)
        for slot in range(_MAX_SLOTS):
            fd = os.open(d / f"{_safe(group)}.{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.set_inheritable(fd, False)
            return MemberIdentity(group, f"{host}-{slot}", incarnation, fd)
    except OSError as exc:
        log.warning(
            "member slots unavailable in %s (%s): using a per-process identity, so a restart "
            "waits for the broker's timeouts; set runtime.local_dir or runtime.instance_id",
            d, exc,
        )  # fmt: skip
    return MemberIdentity(group, f"{host}-{os.getpid()}-{incarnation[:8]}", incarnation)
