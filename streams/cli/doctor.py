"""`tidings doctor`: check each service tidings depends on and say what was found."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from schemas.settings import TidingsSettings

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

__all__ = ["Check", "run_checks"]


@dataclass(frozen=True)
class Check:
    """The outcome of one service check."""

    service: str
    ok: bool
    detail: str

    def line(self) -> str:
        """One human-readable line: service, verdict, detail."""
        return f"{self.service:<9} {'ok ' if self.ok else 'FAIL'}  {self.detail}"


def _kafka(settings: TidingsSettings) -> Check:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    where = settings.kafka.bootstrap_servers
    try:
        admin = AdminClient({**settings.kafka.client_config(), "socket.timeout.ms": 3000})
        md = admin.list_topics(timeout=5)
    except KafkaException as exc:
        return Check(
            "kafka",
            False,
            f"{where}: metadata request failed: {exc.args[0]}; is `make up` running?",
        )
    found = f"{where}: cluster {md.cluster_id}, {len(md.brokers)} broker(s)"
    found += f", {len(md.topics)} topic(s)"
    dlq = _dlq_note(admin, settings) if settings.topics.dlq in md.topics else ""
    return Check("kafka", True, found + dlq)


def _dlq_note(admin: AdminClient, settings: TidingsSettings) -> str:
    """What to append when the DLQ topic takes less than dead letters need ('' if it is fine).

    Only a note (the check stays ok): `tidings topics ensure` and `tidings dev` raise it.
    """
    from concurrent.futures import TimeoutError as FutureTimeout

    from confluent_kafka import KafkaException

    from streams.runtime.dead_letter import DLQ_MAX_MESSAGE_BYTES
    from streams.runtime.kafka import dlq_max_message_bytes

    topic = settings.topics.dlq
    try:
        have = dlq_max_message_bytes(admin, topic, 5)
    except (KafkaException, FutureTimeout, ValueError) as exc:
        return f"; DLQ {topic}: max.message.bytes unreadable ({exc})"
    if have >= DLQ_MAX_MESSAGE_BYTES:
        return ""
    return (
        f"; WARNING: DLQ {topic} has max.message.bytes {have}, below the "
        f"{DLQ_MAX_MESSAGE_BYTES} dead letters need (large ones are refused); raise it with "
        "`tidings topics ensure` (or kafka-configs.sh --alter --entity-type topics "
        f"--entity-name {topic} --add-config max.message.bytes={DLQ_MAX_MESSAGE_BYTES})"
    )


def _postgres(settings: TidingsSettings) -> Check:
    import psycopg

    pg = settings.postgres
    where = f"{pg.host}:{pg.port}/{pg.database}"
    try:
        with psycopg.connect(pg.conninfo()) as conn:
            row = conn.execute("show server_version").fetchone()
    except psycopg.Error as exc:
        from streams.state.db import login_fix

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fix = login_fix(exc) or "is `make up` running?"
        return Check("postgres", False, f"{where}: {reason}; {fix}")
    return Check("postgres", True, f"{where}: PostgreSQL {row[0] if row else '?'}")


def _redis(settings: TidingsSettings) -> Check:
    import redis

    url = settings.redis.url.get_secret_value()
    shown = url.split("@")[-1]
    try:
        client = redis.Redis.from_url(url, socket_timeout=settings.redis.socket_timeout_s)
        try:
            info = client.info("server")
        finally:
            client.close()
    except redis.RedisError as exc:
        return Check("redis", False, f"{shown}: {exc}; is `make up` running?")
    return Check("redis", True, f"{shown}: Redis {info.get('redis_version', '?')}")


def _smtp(settings: TidingsSettings) -> Check:
    import aiosmtplib

    s = settings.smtp
    where = f"{s.host}:{s.port}"

    async def probe() -> str:
        client = aiosmtplib.SMTP(
            hostname=s.host, port=s.port, timeout=s.timeout_s, use_tls=s.use_tls, start_tls=False
        )
        await client.connect()
        try:
            code, msg = await client.ehlo()
            return f"{code} {msg.splitlines()[0] if msg else ''}".strip()
        finally:
            client.close()

    try:
        banner = asyncio.run(probe())
    except (aiosmtplib.SMTPException, OSError) as exc:
        return Check(
            "smtp",
            False,
            f"{where}: {exc}; start the sink (`make run` does) or fix TIDINGS_SMTP__HOST/PORT",
        )
    return Check("smtp", True, f"{where}: EHLO {banner}")


CHECKS: dict[str, Callable[[TidingsSettings], Check]] = {
    "kafka": _kafka,
    "postgres": _postgres,
    "redis": _redis,
    "smtp": _smtp,
}


def run_checks(settings: TidingsSettings, services: list[str] | None = None) -> list[Check]:
    """Run the named checks (default: all); blocks a few seconds per service, never raises."""
    names = services or list(CHECKS)
    results = []
    for name in names:
        try:
            results.append(CHECKS[name](settings))
        except OSError as exc:  # a check must never crash the doctor
            results.append(Check(name, False, f"{type(exc).__name__}: {exc}"))
    return results
