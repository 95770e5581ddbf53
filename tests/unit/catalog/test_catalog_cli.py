"""`tidings catalog check|test` and the pure parts of `diff` (no Kafka needed)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from catalog.replay import Progress, Start, parse_from
from streams.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "catalog"


def test_dry_run_prints_every_notification_per_locale(capsys: pytest.CaptureFixture[str]) -> None:
    event = EXAMPLE / "events" / "user.password-reset.json"
    assert main(["catalog", "test", str(EXAMPLE), "--event", str(event)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "== ann@example.com (email) via email: rule password-reset v1" in out
    assert "== +4915112345678 (phone) via sms: rule password-reset v1" in out
    assert "-- locale default" in out and "-- locale de" in out
    assert "subject: Reset your password" in out and "subject: Passwort zurücksetzen" in out
    assert "text: Ihr Link zum Zurücksetzen des Passworts (gültig 30 Minuten)" in out
    assert "nothing was sent" in captured.err


def test_dry_run_locale_choice_and_bare_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "e.json"
    bare.write_text(json.dumps({"email": "ann@example.com", "name": "Ann"}))
    argv = ["catalog", "test", str(EXAMPLE), "--event", str(bare)]
    assert main([*argv, "--type", "user.registered", "--locale", "de-AT"]) == 0
    out = capsys.readouterr().out
    assert "-- locale de-AT" in out and "subject: Willkommen, Ann!" in out
    assert "-- locale default" not in out
    assert main([*argv, "--type", "order.shipped"]) == 1  # the rule's fields are missing
    assert "failed" in capsys.readouterr().err
    assert main([*argv, "--type", "nobody.listens"]) == 0
    assert "no notification (rules listening to 'nobody.listens': none)" in capsys.readouterr().out


def test_dry_run_unreadable_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["catalog", "test", str(EXAMPLE), "--event", str(bad)]) == 2
    assert "Fix: pass a JSON file" in capsys.readouterr().err


def test_check_exit_codes(make_catalog: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "check", str(EXAMPLE)]) == 0
    root = make_catalog({"rules.yaml": "rules: [{id: x}]\n"})
    assert main(["catalog", "check", str(root)]) == 1
    assert f"{root}/rules.yaml:1:9: rule 'x': missing required fields" in capsys.readouterr().err


def test_parse_from() -> None:
    assert parse_from("orders@12") == Start("orders", offset=12)
    assert parse_from("a@b@0") == Start("a@b", offset=0)
    assert parse_from("orders@2026-01-05T00:00:00Z") == Start("orders", timestamp_ms=1767571200000)
    for bad in ("orders", "@1", "orders@", "orders@yesterday"):
        with pytest.raises(ValueError, match=r"TOPIC@|neither an offset"):
            parse_from(bad)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    out = _Tty()
    bar = Progress(4, out)
    for _ in range(4):
        bar.step()
    bar.close()
    assert "[##############################] 4/4 events" in out.getvalue()
    quiet = io.StringIO()
    Progress(4, quiet).step()
    assert quiet.getvalue() == ""


def test_dry_run_decodes_under_the_configured_route_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sample the route stage would refuse (route.limits) must not pass `catalog test`.
    event = json.loads((EXAMPLE / "events" / "user.password-reset.json").read_text())
    event["data"]["extra"] = {"a": {"b": {"c": {"d": 1}}}}  # body depth 5
    sample = tmp_path / "deep.json"
    sample.write_text(json.dumps(event))
    argv = ["catalog", "test", str(EXAMPLE), "--event", str(sample)]
    assert main(argv) == 0, "within the default limits"
    capsys.readouterr()
    monkeypatch.setenv("TIDINGS_ROUTE__LIMITS__MAX_DEPTH", "4")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "route.limits.max_depth = 4" in err and "TIDINGS_ROUTE__LIMITS__MAX_DEPTH" in err
