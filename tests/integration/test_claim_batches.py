"""Batched claims on the real Redis: one pipeline per batch, and a reply lost mid-batch.

The claims of one moment go to Redis as one pipeline. When the connection dies after Redis ran
the batch but before its reply arrived, every caller hears DependencyDown and retries with the
same token: each gets its claim back at once (no lease to wait out, no false takeover), and no
other member gets any of them meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from urllib.parse import urlparse

import pytest

from schemas.settings import TidingsSettings
from streams.exceptions import DependencyDown
from streams.state import ClaimStore, DeliveryLog, SentRecord

pytestmark = pytest.mark.integration


class CuttingProxy:
    """A TCP proxy to Redis; once `cut` is armed, the next reply is swallowed and the client's
    connection closed: Redis ran the commands, the client never hears the answer."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.cut = False
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        rr, rw = await asyncio.open_connection(*self._target)

        async def up() -> None:
            while data := await cr.read(65536):
                rw.write(data)
                await rw.drain()

        async def down() -> None:
            while data := await rr.read(65536):
                if self.cut:
                    self.cut = False
                    self.cuts += 1
                    cw.transport.abort()  # the reply never arrives
                    return
                cw.write(data)
                await cw.drain()

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (cw, rw):
            w.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


def _store(settings: TidingsSettings, url: str, log: DeliveryLog, **kw: object) -> ClaimStore:
    return ClaimStore(url, log, lease_s=30, ttl_s=60, **kw)  # type: ignore[arg-type]


def test_many_claims_go_in_one_pipeline_and_another_member_gets_none(
    settings: TidingsSettings,
) -> None:
    async def scenario() -> tuple[list[str], list[str], int, list[str]]:
        url = settings.redis.url.get_secret_value()
        log = DeliveryLog(settings.postgres.conninfo())
        a, b = _store(settings, url, log), _store(settings, url, log)
        batches: list[int] = []
        real = a._claim_batch

        async def counting(asks: list[tuple[str, str, str]]) -> list[list[str] | BaseException]:
            batches.append(len(asks))
            return await real(asks)

        a._claims._run = counting  # a spy on the batch call; the Redis client is untouched
        ids = [str(uuid.uuid4()) for _ in range(200)]
        try:
            await a.beat()
            await b.beat()
            mine = await asyncio.gather(*(a.claim(i) for i in ids))
            theirs = await asyncio.gather(*(b.claim(i) for i in ids))
            # Recording many sends marks them all in one pipeline too.
            await asyncio.gather(
                *(a.record_sent(i, "email", SentRecord("smtp", f"<{i}>", 1)) for i in ids[:50])
            )
            after = await asyncio.gather(*(b.claim(i) for i in ids[:50]))
        finally:
            await a.close()
            await b.close()
        return (
            [c.state for c in mine],
            [c.state for c in theirs],
            len(batches),
            [c.state for c in after],
        )

    mine, theirs, n_batches, after = asyncio.run(scenario())
    assert set(mine) == {"ours"} and len(mine) == 200
    assert set(theirs) == {"busy"}, "a live member's claims are waited out, never shared"
    assert n_batches <= 2, f"200 claims of one moment took {n_batches} round trips"
    assert set(after) == {"sent"}


def test_a_reply_lost_mid_batch_gives_every_claim_back_to_its_caller(
    settings: TidingsSettings,
) -> None:
    async def scenario() -> tuple[int, list[str], list[str], int]:
        real = urlparse(settings.redis.url.get_secret_value())
        proxy = CuttingProxy(real.hostname or "127.0.0.1", real.port or 6379)
        await proxy.start()
        via = f"redis://127.0.0.1:{proxy.port}{real.path or ''}"
        log = DeliveryLog(settings.postgres.conninfo())
        a = _store(settings, via, log)
        other = _store(settings, settings.redis.url.get_secret_value(), log)
        ids = [str(uuid.uuid4()) for _ in range(50)]
        tokens = {i: a.new_token() for i in ids}
        try:
            await a.beat()
            await other.beat()
            await a.claim(str(uuid.uuid4()))  # connected, the script loaded: the cut hits claims
            proxy.cut = True  # Redis runs the batch; its answer is lost on the way back
            lost = await asyncio.gather(
                *(a.claim(i, tokens[i]) for i in ids), return_exceptions=True
            )
            failed = sum(isinstance(x, DependencyDown) for x in lost)
            meanwhile = await asyncio.gather(*(other.claim(i) for i in ids))
            again = await asyncio.gather(*(a.claim(i, tokens[i]) for i in ids))
        finally:
            await a.close()
            await other.close()
            await proxy.close()
        return failed, [c.state for c in meanwhile], [c.state for c in again], proxy.cuts

    failed, meanwhile, again, cuts = asyncio.run(scenario())
    assert cuts == 1
    assert failed == 50, "every caller of the cut batch hears that Redis failed"
    assert set(meanwhile) == {"busy"}, "the claims Redis granted are held, not free for others"
    assert set(again) == {"ours"}, "the retry with the same token gets each claim back at once"


def test_claims_go_on_after_redis_lost_its_scripts(settings: TidingsSettings) -> None:
    async def scenario() -> list[str]:
        url = settings.redis.url.get_secret_value()
        log = DeliveryLog(settings.postgres.conninfo())
        a = _store(settings, url, log)
        try:
            await a.beat()
            await a.claim(str(uuid.uuid4()))
            await a._redis.script_flush()  # what a Redis restart or failover does to scripts
            got = await asyncio.gather(*(a.claim(str(uuid.uuid4())) for _ in range(20)))
        finally:
            await a.close()
        return [c.state for c in got]

    assert set(asyncio.run(scenario())) == {"ours"}
