"""The readiness probe's dependency checks: Kafka, Postgres and Redis, off the hot path.

A stage notices an outage only when it next uses the dependency: an idle audit stage would
stay "ready" with Postgres gone. `DependencyProbe` checks each dependency the process's
stages need every `observe.probe_interval_s` on its own daemon thread, with its own
connections and a bound of `observe.probe_timeout_s` per check, and `down()` says which
failed last time. `/readyz` reads it; nothing in a stage waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from schemas.settings import TidingsSettings

__all__ = ["NEEDS", "DependencyProbe"]

log = logging.getLogger(__name__)

# What each stage needs to do its work.
NEEDS: dict[str, tuple[str, ...]] = {
    "route": ("kafka",),
    "deliver": ("kafka", "postgres", "redis"),
    "audit": ("kafka", "postgres"),
    "recipients": ("kafka", "postgres"),
    "callbacks": ("kafka", "postgres"),
}


class DependencyProbe:
    """Checks the dependencies of `stages` every interval; `down()` is never blocking."""

    def __init__(self, settings: TidingsSettings, stages: Iterable[str]) -> None:
        self._s = settings
        self.dependencies = tuple(sorted({d for st in stages for d in NEEDS.get(st, ())}))
        self._down: list[str] = []
        self._checked_at = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clients: dict[str, Any] = {}

    def down(self) -> list[str]:
        """The dependencies whose last check failed; all of them while a check hangs."""
        o = self._s.observe
        if time.monotonic() - self._checked_at > o.probe_interval_s + 4 * o.probe_timeout_s:
            return [f"{d} (probe hangs)" for d in self.dependencies]
        return list(self._down)

    def start(self) -> None:
        """Check once now (blocking, bounded by the timeouts), then on a daemon thread."""
        self.check()
        self._thread = threading.Thread(target=self._loop, name="observe-probe", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop checking and close the probe's connections; blocks up to one check."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._s.observe.probe_timeout_s * 3 + 1)
        for c in self._clients.values():
            with contextlib.suppress(Exception):
                c.close()
        self._clients.clear()

    def check(self) -> list[str]:
        """Run every check once; returns (and keeps) the dependencies that failed."""
        checks: dict[str, Callable[[], None]] = {
            "kafka": self._kafka, "postgres": self._postgres, "redis": self._redis,
        }  # fmt: skip
        down = []
        for dep in self.dependencies:
            try:
                checks[dep]()
            except Exception as exc:
                if dep not in self._down:
                    log.warning("observe: readiness probe: %s unreachable (%s)", dep, exc)
                down.append(dep)
                client = self._clients.pop(dep, None)
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
        self._down = down
        self._checked_at = time.monotonic()
        return down

    def _loop(self) -> None:
        while not self._stop.wait(self._s.observe.probe_interval_s):
            self.check()

    def _kafka(self) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = self._clients.get("kafka")
        if admin is None:
            # Asking for one topic's metadata must never create it (librdkafka would ask
            # the broker to, and a broker that allows it would make it with its defaults).
            conf = {**self._s.kafka.client_config(), "allow.auto.create.topics": False}
            admin = self._clients["kafka"] = _Closing(AdminClient(conf))
        try:
            # One topic's metadata, not the cluster's: listing every topic (and partition) of
            # a busy broker every few seconds cost route ~5% of its CPU (bench profile).
            md = admin.inner.list_topics(
                topic=self._s.topics.status, timeout=self._s.observe.probe_timeout_s
            )
        except KafkaException as exc:
            raise ConnectionError(f"Kafka: {exc.args[0].str()}") from exc
        if not md.brokers:
            raise ConnectionError("Kafka: no broker in the metadata")

    def _postgres(self) -> None:
        import psycopg

        conn = self._clients.get("postgres")
        if conn is None or conn.closed:
            pg = self._s.postgres
            conn = self._clients["postgres"] = psycopg.connect(
                pg.conninfo(), connect_timeout=max(1, int(self._s.observe.probe_timeout_s)),
                autocommit=True, tcp_user_timeout=int(self._s.observe.probe_timeout_s * 1000),
            )  # fmt: skip
        conn.execute("select 1")

    def _redis(self) -> None:
        import redis

        client = self._clients.get("redis")
        if client is None:
            t = self._s.observe.probe_timeout_s
            client = self._clients["redis"] = redis.Redis.from_url(
                self._s.redis.url.get_secret_value(), socket_timeout=t, socket_connect_timeout=t
            )
        client.ping()


class _Closing:
    """An AdminClient with a `close()` (it has none; dropping it is the close)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def close(self) -> None:
        self.inner = None
