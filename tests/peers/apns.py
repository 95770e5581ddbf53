"""A local APNs peer: HTTP/2 over TLS (ALPN h2) with the h2 library, verifying ES256 tokens.

Runs its own asyncio loop in a daemon thread. Every request's pseudo-headers, headers and body
are recorded; `/3/device/<token>` answers 200 with `apns-id`, or Apple's error JSON.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import h2.config
import h2.connection
import h2.events
import jwt


@dataclass
class H2Request:
    headers: dict[str, str]
    body: bytes
    claims: dict[str, object] | None = None


class ApnsPeer:
    """`with ApnsPeer(cert, key, public_pem, team, kid) as apns:` → apns.port, apns.requests."""

    def __init__(self, cert: Path, key: Path, public_pem: str, team_id: str, key_id: str) -> None:
        self.public_pem, self.team_id, self.key_id = public_pem, team_id, key_id
        self.requests: list[H2Request] = []
        self.dead_tokens: set[str] = set()
        self.expire_next_token = False
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ctx.load_cert_chain(cert, key)
        self._ctx.set_alpn_protocols(["h2"])
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ctx)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config=config)
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, H2Request] = {}
        try:
            while data := await reader.read(65535):
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = H2Request(dict(ev.headers), b"")  # type: ignore[arg-type]
                    elif isinstance(ev, h2.events.DataReceived):
                        streams[ev.stream_id].body += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        self._respond(conn, ev.stream_id, streams.pop(ev.stream_id))
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        return
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def _respond(self, conn: h2.connection.H2Connection, sid: int, req: H2Request) -> None:
        self.requests.append(req)
        status, body = 200, b""
        auth = req.headers.get("authorization", "").removeprefix("bearer ")
        try:
            header = jwt.get_unverified_header(auth)
            req.claims = jwt.decode(auth, self.public_pem, algorithms=["ES256"])
            assert header.get("kid") == self.key_id and req.claims.get("iss") == self.team_id
        except (jwt.PyJWTError, AssertionError):
            status, body = 403, b'{"reason":"InvalidProviderToken"}'
        device = req.headers.get(":path", "").removeprefix("/3/device/")
        if status == 200 and self.expire_next_token:
            self.expire_next_token = False
            status, body = 403, b'{"reason":"ExpiredProviderToken"}'
        elif status == 200 and device in self.dead_tokens:
            ts = int(time.time() * 1000)
            status, body = 410, json.dumps({"reason": "Unregistered", "timestamp": ts}).encode()
        headers = [(":status", str(status)), ("apns-id", req.headers.get("apns-id", "none"))]
        if body:
            headers.append(("content-type", "application/json"))
        conn.send_headers(sid, headers, end_stream=not body)
        if body:
            conn.send_data(sid, body, end_stream=True)

    def __enter__(self) -> ApnsPeer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("APNs peer did not start within 10s")
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()
