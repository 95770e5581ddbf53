"""WebPushProvider against npm web-push-testing, which decrypts what it receives.

The peer binds every interface, so the whole exchange runs inside a fresh network namespace
(`unshare -n`) that has only loopback: nothing can leave this machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.peers.npm import ROOT, ensure_installed


def test_webpush_is_decrypted_by_the_peer_and_expiry_marks_it_dead(tmp_path: Path) -> None:
    ensure_installed()
    unshare = shutil.which("unshare")
    assert unshare, (
        "unshare (util-linux) is needed to isolate web-push-testing: apt-get install util-linux"
    )
    log = tmp_path / "web-push-testing.log"
    proc = subprocess.run(
        [unshare, "-n", "--", sys.executable, "-m", "tests.peers.webpush_netns", str(log)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"driver failed ({proc.returncode}); unshare -n needs root or CAP_SYS_ADMIN:\n"
        f"{proc.stderr[-3000:]}\n{log.read_text(errors='replace') if log.exists() else ''}"
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    [message] = result["messages"]
    assert json.loads(message) == {
        "id": "wp-1",
        "title": "Order shipped",
        "body": "Grüße 👋",
        "data": {"order": "42"},
    }
    assert result["endpoint"].startswith("http://localhost:8090/notify/")
    assert result["dead"] == {"code": "dead_token", "hooked": ["HTTP 410 from the push service"]}
