"""Client-library limit rows: a bare client sending as fast as it can to the bench's peer.

    python -m bench.limits smtp|aiohttp|httpx --port P --concurrency N [--max-s S] [--tick-s T]

- `smtp`: aiosmtplib (the library tidings' email channel uses), N connections to smtp-sink,
  each sending one pre-built ~1.5 KB text+HTML mail after the other (MAIL, RCPT, DATA: what
  tidings' `SmtpSender.send_raw` does per notification).
- `aiohttp`, `httpx`: N concurrent POSTs of a ~450 B JSON body with webhook-like headers to
  nginx over a keep-alive pool of N connections (httpx is what tidings' webhook channel uses;
  aiohttp is there for comparison).

No Kafka, no rendering, no signing, no claims: the sends alone, at tidings' concurrency (the
harness passes it). Like bench/runners.py, the process prints `{"t": unix time, "c": {"sent": n,
"failed": m}}` every `--tick-s` and once when it stops (SIGTERM/SIGINT or after `--max-s`), so
the harness measures it with the same window and psutil CPU sampling. Traffic goes to 127.0.0.1
only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

__all__ = ["KINDS", "main"]

KINDS = ("smtp", "aiohttp", "httpx")
_SENDER = "notifications@tidings.local"
_RECIPIENT = "ada.lovelace.4242@example.com"


class Counts:
    """What the workers did; printed as the process's counter line."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0

    def line(self) -> str:
        return json.dumps({"t": time.time(), "c": {"sent": self.sent, "failed": self.failed}})


def mail_bytes() -> bytes:
    """One text+HTML mail shaped like the bench catalog's (about 1.5 KB)."""
    msg = EmailMessage()
    msg["From"] = f"tidings <{_SENDER}>"
    msg["To"] = _RECIPIENT
    msg["Subject"] = "Order created: ORD-00424242"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="tidings.local")
    msg["Auto-Submitted"] = "auto-generated"
    items = "".join(f"- {q} x Mechanical keyboard at 129.00\n" for q in (1, 2, 3))
    msg.set_content(f"Hello Ada Lovelace,\n\nThis is about your order (ORD-00424242).\n{items}")
    msg.add_alternative(
        "<html><body><p>Hello Ada Lovelace,</p><ul>"
        + "<li>1 x Mechanical keyboard</li>" * 3
        + "</ul><p>Total: 387.00 EUR</p></body></html>",
        subtype="html",
    )
    return msg.as_bytes()


def webhook_request() -> tuple[bytes, dict[str, str]]:
    """A JSON body and headers shaped like the webhook channel's (signature precomputed)."""
    body = {
        "event": "order created",
        "ref": "ORD-00424242",
        "name": "Ada Lovelace",
        "amount": 387.0,
        "currency": "EUR",
        "items": [{"sku": f"SKU-00{i}", "name": "Mechanical keyboard", "quantity": 1,
                   "price": 129.0} for i in range(3)],
    }  # fmt: skip
    headers = {
        "content-type": "application/json",
        "webhook-id": "0190c5a2-7d4e-7000-8000-000000000000",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + "A" * 43 + "=",
    }
    return json.dumps(body, separators=(",", ":")).encode(), headers


async def _smtp_worker(port: int, data: bytes, counts: Counts, stop: asyncio.Event) -> None:
    """One connection: send `data` back to back until `stop`; reconnect after a failure."""
    import aiosmtplib

    smtp: aiosmtplib.SMTP | None = None
    while not stop.is_set():
        try:
            if smtp is None or not smtp.is_connected:
                smtp = aiosmtplib.SMTP(
                    hostname="127.0.0.1", port=port, local_hostname="tidings.local", timeout=10
                )
                await smtp.connect()
            await smtp.sendmail(_SENDER, [_RECIPIENT], data)
            counts.sent += 1
        except (aiosmtplib.SMTPException, OSError):
            counts.failed += 1
            if smtp is not None:
                smtp.close()
            smtp = None
            await asyncio.sleep(0.05)
    if smtp is not None and smtp.is_connected:
        smtp.close()


async def run_smtp(port: int, concurrency: int, counts: Counts, stop: asyncio.Event) -> None:
    """`concurrency` connections to smtp-sink, each sending one mail after the other."""
    data = mail_bytes()
    await asyncio.gather(*(_smtp_worker(port, data, counts, stop) for _ in range(concurrency)))


async def _loop_posts(
    post: Callable[[], Awaitable[int]], concurrency: int, counts: Counts, stop: asyncio.Event
) -> None:
    async def worker() -> None:
        while not stop.is_set():
            try:
                status = await post()
            except Exception:  # the library's own error types differ; each one is a failure
                status = 0
                await asyncio.sleep(0.05)
            if 200 <= status < 300:
                counts.sent += 1
            else:
                counts.failed += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run_aiohttp(port: int, concurrency: int, counts: Counts, stop: asyncio.Event) -> None:
    """`concurrency` concurrent POSTs through one aiohttp session (pool of `concurrency`)."""
    import aiohttp

    url = f"http://127.0.0.1:{port}/hooks/c-4242"
    body, headers = webhook_request()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:

        async def post() -> int:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        await _loop_posts(post, concurrency, counts, stop)


async def run_httpx(port: int, concurrency: int, counts: Counts, stop: asyncio.Event) -> None:
    """`concurrency` concurrent POSTs through one httpx.AsyncClient (pool of `concurrency`)."""
    import httpx

    url = f"http://127.0.0.1:{port}/hooks/c-4242"
    body, headers = webhook_request()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, trust_env=False, timeout=10.0) as client:

        async def post() -> int:
            resp = await client.post(url, content=body, headers=headers)
            return resp.status_code

        await _loop_posts(post, concurrency, counts, stop)


_RUNNERS = {"smtp": run_smtp, "aiohttp": run_aiohttp, "httpx": run_httpx}


async def _main(args: argparse.Namespace) -> None:
    counts = Counts()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.max_s, stop.set)

    async def ticker() -> None:
        while not stop.is_set():
            print(counts.line(), flush=True)
            await asyncio.sleep(args.tick_s)

    tick = asyncio.create_task(ticker())
    try:
        await _RUNNERS[args.kind](args.port, args.concurrency, counts, stop)
    finally:
        tick.cancel()
        print(counts.line(), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one limit client until stopped; returns 0."""
    ap = argparse.ArgumentParser(prog="python -m bench.limits")
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("--port", type=int, required=True, help="the peer's port on 127.0.0.1")
    ap.add_argument("--concurrency", type=int, required=True)
    ap.add_argument("--tick-s", type=float, default=0.5)
    ap.add_argument("--max-s", type=float, default=300.0, help="hard stop after this long")
    asyncio.run(_main(ap.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
