"""Stable member identities: the lowest free slot, taken back by a restarted process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streams.runtime.member import claim_identity


def test_slots_are_distinct_while_held_and_reused_after_release(tmp_path: Path) -> None:
    a = claim_identity("g", tmp_path)
    b = claim_identity("g", tmp_path)
    assert a.instance != b.instance and a.instance.endswith("-0") and b.instance.endswith("-1")
    assert a.transactional_id == f"tidings-g-{a.instance}"
    assert a.incarnation != b.incarnation
    a.release()
    c = claim_identity("g", tmp_path)
    assert c.instance == a.instance, "a restart takes the freed slot: the same identity"
    assert c.incarnation != a.incarnation, "but it is a new incarnation"
    other = claim_identity("other-group", tmp_path)
    assert other.instance.endswith("-0"), "slots are per group"
    for m in (b, c, other):
        m.release()


def test_a_killed_process_frees_its_slot(tmp_path: Path) -> None:
    code = (
        "import os, signal, sys; from pathlib import Path; from streams.runtime.member import "
        "claim_identity; m = claim_identity('g', Path(sys.argv[1])); print(m.instance, "
        "flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    )
    held = claim_identity("g", tmp_path)  # slot 0 stays held by this process
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip().endswith("-1")
    again = claim_identity("g", tmp_path)
    assert again.instance == out.stdout.strip(), "SIGKILL released the dead process's slot"
    held.release()
    again.release()


def test_an_explicit_instance_id_wins(tmp_path: Path) -> None:
    m = claim_identity("g", tmp_path, "pod/deliver-3")
    assert m.instance == "pod_deliver-3"
