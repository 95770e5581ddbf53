"""Web Push end to end inside a private network namespace (run under `unshare -n`).

web-push-testing binds every interface, so it only ever runs in a namespace of its own, where the
only interface is `lo`. This driver brings `lo` up, starts the server, subscribes with our VAPID
key, sends through WebPushProvider, reads back what the server decrypted, expires the
subscription and sends again (expecting a dead subscription), then prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from processors.channels.push.deadtoken import DeadToken, DeadTokenError
from processors.channels.push.webpush import WebPushProvider
from processors.http import SafeHttp
from schemas.content import PushContent
from tests.peers.npm import NPM, process
from tests.unit.processors.fakes import notification

PORT = 8090


async def scenario() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    dead: list[DeadToken] = []

    async def hook(d: DeadToken) -> None:
        dead.append(d)

    provider = WebPushProvider(
        vapid_private_key=pem, subject="mailto:ops@tidings.test", on_dead_token=hook,
        http=SafeHttp(allow=("127.0.0.0/8", "::1/128"), allow_http=True),
    )  # fmt: skip
    base = f"http://127.0.0.1:{PORT}"
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=10) as api:
        r = await api.post("/subscribe", json={"applicationServerKey": provider.public_key})
        sub = r.json()["data"]
        out["endpoint"] = sub["endpoint"]
        recipient = json.dumps({"endpoint": sub["endpoint"], "keys": sub["keys"]})
        content = PushContent(title="Order shipped", body="Grüße 👋", data={"order": "42"})
        n = notification("wp-1", channel="webpush", recipient=recipient, priority="high")
        out["message_id"] = await provider.send(n, content)
        r = await api.post("/get-notifications", json={"clientHash": sub["clientHash"]})
        out["messages"] = r.json()["data"]["messages"]
        await api.post(f"/expire-subscription/{sub['clientHash']}")
        try:
            await provider.send(
                notification("wp-2", channel="webpush", recipient=recipient), content
            )
            out["dead"] = None
        except DeadTokenError as exc:
            out["dead"] = {"code": exc.code, "hooked": [d.reason for d in dead]}
    await provider.close()
    return out


def main() -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    server = NPM / "node_modules/web-push-testing/src/bin/server.js"
    with process(["node", str(server), str(PORT)], "Server running", Path(sys.argv[1])):
        result = asyncio.run(scenario())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
