"""A local HTTP endpoint for measurements: answers every request 200 after `--delay-s`.

Runs as its own process (like a real receiver), asyncio (aiohttp), so a 200 ms delay costs no
thread per request. Prints how many requests it answered when stopped (SIGTERM/SIGINT).

    .venv/bin/python scripts/http_sink.py --port 18080 [--delay-s 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay-s", type=float, default=0.0)
    args = ap.parse_args()
    answered = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal answered
        await request.read()
        if args.delay_s:
            await asyncio.sleep(args.delay_s)
        answered += 1
        return web.Response(text="ok")

    async def serve() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())
    print(f"answered {answered} requests", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
