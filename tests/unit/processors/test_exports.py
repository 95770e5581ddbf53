"""processors/ and its channel packages export their API through `__init__`, and loading one
channel loads no other: only `processors.channels.email` (and the registry) import aiosmtplib."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = [
    "processors",
    "processors.channels",
    "processors.channels.email",
    "processors.channels.push",
]
# Channel modules and packages; each must load without the others.
CHANNELS = ["email", "push", "sms", "slack", "webhook", "inapp"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_is_importable_and_unique(package: str) -> None:
    pkg = importlib.import_module(package)
    names = pkg.__all__
    assert len(names) == len(set(names)), f"{package}.__all__ names each once"
    missing = [n for n in names if not hasattr(pkg, n)]
    assert not missing, f"{package}.__all__ names what it doesn't export: {missing}"


def test_processors_exports_the_contract_the_failover_the_registry_and_the_errors() -> None:
    import processors
    from processors.exceptions import PermanentSendError, ProcessorError, RetryableSendError
    from processors.failover import Failover, SendResult
    from processors.provider import Provider
    from processors.registry import build_providers

    assert set(processors.__all__) == {
        "Provider", "Failover", "SendResult", "build_providers",
        "PermanentSendError", "ProcessorError", "RetryableSendError",
    }  # fmt: skip
    exported = [getattr(processors, n) for n in sorted(processors.__all__)]
    assert exported == [
        Failover, PermanentSendError, ProcessorError, Provider, RetryableSendError, SendResult,
        build_providers,
    ]  # fmt: skip
    with pytest.raises(AttributeError):
        _ = processors.no_such_name  # type: ignore[attr-defined]


@pytest.mark.parametrize("package", PACKAGES[1:])
def test_each_modules_public_names_are_re_exported_by_its_package(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.ispkg:
            continue  # email/ and push/ export their own
        mod = importlib.import_module(f"{package}.{info.name}")
        public = getattr(mod, "__all__", None)
        assert public is not None, f"{package}.{info.name} declares __all__"
        left_out = [n for n in public if n not in pkg.__all__]
        assert not left_out, f"{package} doesn't re-export {info.name}: {left_out}"
        assert all(getattr(pkg, n) is getattr(mod, n) for n in public)


def test_the_channels_are_all_there_is() -> None:
    import processors.channels

    found = {m.name for m in pkgutil.iter_modules(processors.channels.__path__)}
    assert found == set(CHANNELS)


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(__import__('json').dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_channel_loads_no_other_channel(channel: str) -> None:
    loaded = _loaded_after(f"import processors.channels.{channel}")
    others = {f"processors.channels.{c}" for c in CHANNELS if c != channel}
    assert not loaded & others, f"processors.channels.{channel} loads {sorted(loaded & others)}"
    assert ("aiosmtplib" in loaded) == (channel == "email"), "only email imports aiosmtplib"


def test_the_api_without_the_registry_loads_no_channel() -> None:
    loaded = _loaded_after("from processors import Failover, Provider, RetryableSendError")
    assert not {m for m in loaded if m.startswith("processors.channels")}
    assert "aiosmtplib" not in loaded
    assert "processors.registry" not in loaded
