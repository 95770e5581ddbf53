"""The catalog a worker judges events with, swapped atomically on reload.

A stage reads `ref.current` once per batch, so every event of the batch is judged under one
catalog version even while a reload happens. A new catalog comes from:

- `reload()`: the directory again (e.g. on SIGHUP);
- `start_watch(interval_s)`: a thread told of changes by inotify (`streams.state.dirwatch`;
  it polls where inotify is missing): local use;
- `follow(settings, topic)`: a thread following the compacted topic `tidings catalog
  publish` writes to (a fleet).

A catalog that fails to load is refused: the last good one stays, the refusal is logged once
per bad version and kept in `last_error`. `stop()` ends the threads.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from catalog import Catalog, CatalogError, CatalogLoadError, load_catalog, load_catalog_files
from catalog.bundle import decode_bundle
from catalog.layout import catalog_files, digest, read_tree
from schemas.settings import TidingsSettings
from streams.exceptions import ReadStalled, TopicMissing
from streams.runtime.kafka import make_consumer
from streams.runtime.reader import TopicReader
from streams.state.dirwatch import DirWatch

__all__ = ["DEFAULT_CATALOG_KEY", "DEFAULT_CATALOG_TOPIC", "CatalogRef"]

log = logging.getLogger(__name__)

DEFAULT_CATALOG_TOPIC = "tidings.catalog"
DEFAULT_CATALOG_KEY = "default"

Listener = Callable[[Catalog], None]


class CatalogRef:
    """Holds the current catalog; every way of replacing it keeps the last good one."""

    def __init__(self, catalog: Catalog, path: Path | None = None) -> None:
        self._current = catalog
        self._path = path
        self._lock = threading.Lock()
        self._refused: str | None = None  # version of the last refused catalog
        self.last_error: str | None = None
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def load(cls, path: Path) -> CatalogRef:
        """Load the catalog at `path`; raises CatalogLoadError with every problem."""
        return cls(load_catalog(path), path)

    @classmethod
    def from_topic(
        cls,
        settings: TidingsSettings,
        topic: str = DEFAULT_CATALOG_TOPIC,
        key: str = DEFAULT_CATALOG_KEY,
        timeout_s: float = 30.0,
    ) -> CatalogRef:
        """The newest good catalog published on `topic`; raises CatalogError if there is none."""
        found: Catalog | None = None
        errors: list[str] = []
        for value in reversed(_read_all(settings, topic, key, timeout_s)):  # newest first
            try:
                version, files = decode_bundle(value)
                found = load_catalog_files(files, f"{topic}@{version}")
                break
            except CatalogError as exc:
                errors.append(str(exc))
        if found is None:
            raise _NoCatalog(topic, key, errors)
        return cls(found)

    @property
    def current(self) -> Catalog:
        """The catalog in force (a plain attribute read: atomic)."""
        return self._current

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(new_catalog)` after every switch (on the switching thread)."""
        self._listeners.append(listener)

    def install(self, files: Mapping[str, bytes], origin: str) -> bool:
        """Switch to the catalog made of `files` if it is new and good; True if switched."""
        version = digest(sorted(files.items()))
        with self._lock:
            if version in (self._current.version, self._refused):
                return False
            try:
                new = load_catalog_files(files, origin)
            except CatalogLoadError as exc:
                self._refused, self.last_error = version, str(exc)
                log.error(
                    "catalog %s from %s refused, keeping %s:\n%s",
                    version,
                    origin,
                    self._current.version,
                    exc,
                )
                return False
            self._current, self.last_error = new, None
            log.info("catalog switched to version %s from %s", new.version, origin)
        for listener in self._listeners:
            listener(new)
        return True

    def reload(self) -> bool:
        """Reload from the path; True if the version changed. Never raises for a bad catalog."""
        if self._path is None:
            return False
        try:
            files = read_tree(self._path)
        except OSError as exc:
            self.last_error = f"cannot read {self._path}: {exc}"
            log.error("catalog reload failed, keeping %s: %s", self._current.version, exc)
            return False
        return self.install(files, str(self._path))

    def start_watch(self, interval_s: float = 1.0) -> None:
        """Reload when the directory's files change: told by inotify, else polled every
        `interval_s` (a stop is seen within `interval_s` either way)."""
        if self._path is None:
            raise ValueError("this CatalogRef has no directory to watch; build it with load(path)")
        path = self._path
        seen = _fingerprint(path)
        watch = DirWatch(path)

        def loop() -> None:
            # With inotify the thread sleeps until a file changes (the tree is walked only
            # then); without it, the tree is fingerprinted every `interval_s`.
            nonlocal seen
            try:
                while not self._stop.is_set():
                    if watch.available:
                        if not watch.wait(interval_s):
                            continue
                    elif self._stop.wait(interval_s):
                        return
                    now = _fingerprint(path)
                    if now != seen:
                        seen = now
                        self.reload()
            finally:
                watch.close()

        self._start(loop, "catalog-watch")

    def follow(
        self,
        settings: TidingsSettings,
        topic: str = DEFAULT_CATALOG_TOPIC,
        key: str = DEFAULT_CATALOG_KEY,
    ) -> None:
        """Follow the compacted `topic` from its start; install every bundle keyed `key`."""

        def loop() -> None:
            consumer = _consumer(settings)
            try:
                while not self._stop.is_set() and not _assign(consumer, topic):
                    self._stop.wait(1.0)
                while not self._stop.is_set():
                    latest = None
                    for msg in consumer.consume(100, 0.5):
                        if msg.error() is None and (msg.key() or b"").decode() == key:
                            latest = msg
                    if latest is not None:
                        self._install_record(latest.value(), f"{topic}@{latest.offset()}")
            finally:
                consumer.close()

        self._start(loop, "catalog-follow")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the watch and follow threads and wait for them."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads.clear()
        self._stop = threading.Event()

    def _install_record(self, value: bytes | None, origin: str) -> None:
        try:
            version, files = decode_bundle(value)
        except CatalogError as exc:
            self.last_error = str(exc)
            log.error(
                "catalog record %s refused, keeping %s: %s", origin, self.current.version, exc
            )
            return
        self.install(files, f"{origin} (version {version})")

    def _start(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)


class _NoCatalog(CatalogError):
    def __init__(self, topic: str, key: str, errors: list[str]) -> None:
        why = f"; every record was refused: {errors[-1]}" if errors else ""
        super().__init__(
            f"no good catalog keyed {key!r} on topic {topic!r}{why}. Fix: publish one with "
            f"`tidings catalog publish DIR --topic {topic}`"
        )


def _fingerprint(path: Path) -> str:
    # Names, sizes and mtimes: cheap to poll; the content hash decides whether it changed.
    h = hashlib.sha256()
    try:
        for rel, item in catalog_files(path):
            if not item.is_file():
                continue
            st = item.stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError as exc:
        return f"error:{exc}"
    return h.hexdigest()


def _consumer(settings: TidingsSettings) -> Any:
    # A fresh group id, and only assign(): the group never joins, never commits.
    return make_consumer(settings, f"tidings-catalog-{uuid.uuid4().hex}", None)


def _assign(consumer: Any, topic: str) -> bool:
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        return False
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    return True


def _read_all(settings: TidingsSettings, topic: str, key: str, timeout_s: float) -> list[bytes]:
    """The values of every record with `key`, oldest first; [] without the topic. What was
    read when `timeout_s` runs out (Kafka slow or gone) is returned, not an error."""
    values: list[bytes] = []
    reader = TopicReader(settings, topic, idle_s=timeout_s, deadline_s=timeout_s,
                         purpose="catalog")  # fmt: skip
    try:
        with reader:
            for r in reader:
                if (r.key or b"").decode("utf-8", "replace") == key and r.value:
                    values.append(r.value)
    except (TopicMissing, ReadStalled):
        pass
    return values
