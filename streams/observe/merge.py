"""One endpoint for several processes: the supervisor's view of its workers.

`tidings run` without `--threads` runs each stage as a child process, each with its own
metrics registry and its own `ObserveServer` on a free port of 127.0.0.1, which it writes
to a port file the supervisor named. `Children` answers the supervisor's `/metrics`,
`/healthz` and `/readyz` from theirs:

- `/metrics`: every child's exposition, merged by metric family, each series labelled
  `worker="<stage>"` or `worker="<stage>#<i>"`, so one scrape sees the whole command.
- `/healthz`: live while no child that announced itself answers 503 or stops answering.
- `/readyz`: ready once every child announced itself and answers 200.

Scrapes go out one child at a time with a short timeout; a child that doesn't answer is
named in the health bodies and leaves its series out of that scrape.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = ["Children", "merge_expositions"]


def merge_expositions(texts: dict[str, str]) -> bytes:
    """Merge several text expositions (worker name → text), adding a `worker` label; pure."""
    families: dict[str, Metric] = {}
    for worker, text in sorted(texts.items()):
        for fam in text_string_to_metric_families(text):
            merged = families.get(fam.name)
            if merged is None:
                merged = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                families[fam.name] = merged
            for s in fam.samples:
                merged.add_sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp,
                                  s.exemplar)  # fmt: skip

    class _Fixed(Collector):
        def collect(self) -> Iterator[Metric]:
            yield from families.values()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    return generate_latest(registry)


class Children:
    """The workers of one supervisor, found through their port files in `directory`."""

    def __init__(self, names: Sequence[str], directory: Path, timeout_s: float = 2.0) -> None:
        self.names = tuple(names)
        self.directory = directory
        self._timeout_s = timeout_s

    def port_file(self, name: str) -> Path:
        """Where worker `name` writes its port once it serves."""
        return self.directory / f"{name.replace('#', '-')}.port"

    def _url(self, name: str) -> str | None:
        try:
            port = int(self.port_file(name).read_text().strip())
        except (OSError, ValueError):
            return None
        return f"http://127.0.0.1:{port}"

    def _get(self, url: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=self._timeout_s) as r:
                return int(r.status), r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")
        except (OSError, ValueError) as exc:
            return 0, f"unreachable: {exc}"

    def metrics(self) -> bytes:
        """Every answering worker's metrics, merged."""
        texts = {}
        for name in self.names:
            url = self._url(name)
            if url is not None:
                code, body = self._get(f"{url}/metrics")
                if code == 200:
                    texts[name] = body
        return merge_expositions(texts)

    def live(self) -> tuple[bool, str]:
        """Alive unless a worker that serves answers 503 or stopped answering."""
        return self._ask("/healthz", starting_ok=True)

    def ready(self) -> tuple[bool, str]:
        """Ready once every worker serves and answers 200."""
        return self._ask("/readyz", starting_ok=False)

    def _ask(self, path: str, *, starting_ok: bool) -> tuple[bool, str]:
        problems = []
        for name in self.names:
            url = self._url(name)
            if url is None:
                if not starting_ok:
                    problems.append(f"{name}: starting")
                continue
            code, body = self._get(f"{url}{path}")
            if code != 200:
                detail = "; ".join(line for line in body.splitlines() if line) or f"HTTP {code}"
                problems.append(f"{name}: {detail}")
        return (not problems, "\n".join(problems) or "ok")
