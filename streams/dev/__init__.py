"""`make run`'s local demo: sample events and their producer (`demo`), the whole pipeline with
a live summary (`pipeline`), and the SMTP sink that keeps mail as .eml files (`smtp_sink`).

Only `demo` is re-exported here: `tidings emit` and `tidings demo` use it in a production
install, where aiosmtpd (a dev dependency, needed by `pipeline` and `smtp_sink`) is absent.
"""

from __future__ import annotations

from streams.dev.demo import Mode, cloudevent, encode, produce_demo, sample_event

__all__ = [
    "Mode",
    "cloudevent",
    "encode",
    "produce_demo",
    "sample_event",
]
