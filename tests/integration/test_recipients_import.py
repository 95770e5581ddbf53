"""`tidings recipients import` and dead tokens against the real Postgres."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from processors.channels.push.deadtoken import DeadToken
from processors.channels.push.deadtoken_store import PostgresDeadTokens
from schemas.recipient import Address, Recipient
from schemas.settings import TidingsSettings
from streams.cli.main import main
from streams.state.directory import Directory
from streams.state.recipient_rows import upsert_change
from tests.integration.pipeline import stored_addresses

pytestmark = pytest.mark.integration

PG = psycopg.Connection[tuple[Any, ...]]
HEADER = "tenant,id,email,phone,locale,timezone,attributes,push_tokens\n"


@pytest.fixture
def directory(settings: TidingsSettings) -> Iterator[Directory]:
    d = Directory(settings.postgres.conninfo())
    yield d
    d.close()


def count(pg: PG, table: str, tenant: str) -> int:
    row = pg.execute(f"select count(*) from {table} where tenant = %s", (tenant,)).fetchone()
    return int(row[0]) if row else 0


def test_a_csv_imports_its_good_rows_and_names_the_bad_ones(
    tmp_path: Path, tenant: str, directory: Directory, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "people.csv"
    f.write_text(
        HEADER
        + f'{tenant},u1,ada@example.com,+14155550123,en-GB,Europe/London,"{{""plan"": ""pro""}}",'
        + "fcm:tok-1|apns:tok-2\n"
        + f"{tenant},u2,not-an-email,,,,,\n"
        + f"{tenant},u3,c@example.com,12345,,,,\n"
        + f"{tenant},u4,d@example.com,,,,,\n"
    )
    assert main(["recipients", "import", str(f)]) == 1
    out, err = capsys.readouterr()
    assert f"{f}:3: email: not an email address" in err
    assert f"{f}:4: phone: not an E.164 number" in err
    assert "imported 2 recipient(s)" in out and "2 row(s) refused" in out
    got = directory.lookup([(tenant, f"u{i}") for i in range(1, 5)])
    assert set(got) == {(tenant, "u1"), (tenant, "u4")}
    u1 = got[(tenant, "u1")]
    assert (u1.locale, u1.attributes, u1.addresses_on("push")) == (
        "en-GB", {"plan": "pro"}, ["tok-1", "tok-2"],
    )  # fmt: skip
    assert main(["recipients", "show", f"{tenant}/u1"]) == 0
    assert json.loads(capsys.readouterr().out)["email"] == "ada@example.com"


def test_jsonl_imports_replacing_addresses_and_the_last_duplicate_wins(
    tmp_path: Path, tenant: str, directory: Directory, pg: PG
) -> None:
    old = Recipient(tenant=tenant, id="u1", addresses=(Address(channel="push", address="gone"),))
    directory.import_rows([old])
    lines = [
        {"tenant": tenant, "id": "u1", "email": "first@example.com"},
        {"tenant": tenant, "id": "u2", "preferences": {"channels": ["sms"]},
         "addresses": [{"channel": "slack", "address": "https://hooks.slack.com/x"}]},
        {"tenant": tenant, "id": "u1", "email": "last@example.com",
         "addresses": [{"channel": "webhook", "address": "https://example.com/hook"}]},
    ]  # fmt: skip
    f = tmp_path / "people.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["recipients", "import", str(f)]) == 0
    got = directory.lookup([(tenant, "u1"), (tenant, "u2")])
    assert got[(tenant, "u1")].email == "last@example.com"
    assert got[(tenant, "u1")].addresses_on("webhook") == ["https://example.com/hook"]
    assert got[(tenant, "u1")].addresses_on("push") == [], "an upsert replaces every address"
    assert got[(tenant, "u2")].preferences.channels == ("sms",)
    assert stored_addresses(pg, tenant) == 2


def test_a_row_only_postgres_refuses_leaves_nothing_half_written(
    tmp_path: Path, tenant: str, directory: Directory, pg: PG,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    before = Recipient(tenant=tenant, id="u0", email="before@example.com")
    directory.import_rows([before])
    rows = [{"tenant": tenant, "id": f"u{i}", "email": f"u{i}@example.com"} for i in range(3000)]
    rows[2500]["locale"] = "xx-refused"
    f = tmp_path / "people.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in rows))
    # A value the model accepts and only Postgres refuses: a constraint for this tenant alone
    # (every value the model can't store, such as a NUL, it refuses itself: below).
    name = f"refuse_{tenant.replace('-', '_')}"
    pg.execute(f"alter table recipients add constraint {name} check (tenant <> '{tenant}' "
               "or locale is distinct from 'xx-refused') not valid")  # fmt: skip
    try:
        assert main(["recipients", "import", str(f)]) == 1
    finally:
        pg.execute(f"alter table recipients drop constraint {name}")
    err = capsys.readouterr().err
    # Refused after the copy (by the insert the constraint checks): Postgres names no line.
    assert f'violates check constraint "{name}"' in err and "nothing of it was written" in err
    assert count(pg, "recipients", tenant) == 1
    assert directory.lookup([(tenant, "u0")]) == {(tenant, "u0"): before}
    # A NUL (valid JSON, a valid str; Postgres text can't hold it) is a row refused while
    # reading, by file:line, like any invalid row: the others are imported.
    rows[2500]["locale"] = "fr\u0000"
    f.write_text("".join(json.dumps(x) + "\n" for x in rows))
    assert main(["recipients", "import", str(f)]) == 1
    out = capsys.readouterr()
    assert f"{f}:2501: locale: contains a NUL character" in out.err
    assert "1 row(s) refused" in out.out
    assert count(pg, "recipients", tenant) == 2999
    assert (tenant, "u2500") not in directory.lookup([(tenant, "u2500")])


def test_a_dead_token_leaves_the_directory_and_is_not_written_back(
    tenant: str, directory: Directory, pg: PG, settings: TidingsSettings
) -> None:
    sub = json.dumps({"endpoint": f"https://push.example/{tenant}", "keys": {"auth": "a"}})
    r = Recipient(tenant=tenant, id="u1", addresses=(
        Address(channel="push", address=f"{tenant}-dead", platform="fcm"),
        Address(channel="push", address=f"{tenant}-live", platform="fcm"),
        Address(channel="webpush", address=sub),
    ))  # fmt: skip
    # Another recipient lists the same device (a shared tablet): it goes for both.
    other = Recipient(tenant=tenant, id="u2", addresses=r.addresses[:1])
    directory.apply([(0, 1, upsert_change(r), r.key()), (0, 2, upsert_change(other), other.key())])
    hook = PostgresDeadTokens(settings.postgres.conninfo())

    async def report() -> None:
        for channel, token in (("push", f"{tenant}-dead"),
                               ("webpush", f"https://push.example/{tenant}")):  # fmt: skip
            await hook(DeadToken(channel, "fcm", "user:u1", token, "UNREGISTERED", "n-1"))
        await hook.close()

    def pushes(rid: str) -> list[str]:
        return directory.lookup([(tenant, rid)])[(tenant, rid)].addresses_on("push")

    tokens = [f"{tenant}-dead", f"https://push.example/{tenant}"]
    try:
        asyncio.run(report())
        assert directory.lookup([(tenant, "u1")])[(tenant, "u1")].addresses == r.addresses[1:2]
        assert pushes("u2") == []
        # The producing team still lists the dead token: it stays out ...
        directory.apply([(0, 3, upsert_change(r), r.key())])
        assert pushes("u1") == [f"{tenant}-live"]
        # ... unless the device was seen after the report (reinstalled, token reissued).
        seen = datetime.now(UTC) + timedelta(seconds=5)
        back = r.model_copy(update={"addresses": (r.addresses[0].model_copy(
            update={"last_seen": seen}),)})  # fmt: skip
        directory.apply([(0, 4, upsert_change(back), r.key())])
        assert pushes("u1") == [f"{tenant}-dead"]
        assert pushes("u2") == [], "seen again on u1's record only"
        # The rows keep what their producers sent; reads hide the dead.
        assert stored_addresses(pg, tenant) == 2
    finally:
        pg.execute("delete from dead_tokens where token = any(%s)", (tokens,))


def test_odd_tokens_are_stored_exactly_and_hidden_when_dead(
    tenant: str, directory: Directory, pg: PG, settings: TidingsSettings
) -> None:
    odd = [f'{tenant}-q"uote', f"{tenant}-back\\slash", f"{tenant}-\u00e9t\u00e9 {{x,y}}", "NULL"]
    r = Recipient(tenant=tenant, id="u1", addresses=tuple(
        Address(channel="push", address=t, platform="fcm") for t in odd
    ))  # fmt: skip
    directory.import_rows([r])
    row = pg.execute("select tokens from recipients where tenant = %s", (tenant,)).fetchone()
    assert row is not None and row[0] == odd
    assert directory.lookup([(tenant, "u1")])[(tenant, "u1")] == r
    hook = PostgresDeadTokens(settings.postgres.conninfo())

    async def report() -> None:
        for token in odd[:3]:
            await hook(DeadToken("push", "fcm", "user:u1", token, "UNREGISTERED", "n-1"))
        await hook.close()

    try:
        asyncio.run(report())
        assert directory.lookup([(tenant, "u1")])[(tenant, "u1")].addresses_on("push") == ["NULL"]
    finally:
        pg.execute("delete from dead_tokens where token = any(%s)", (odd[:3],))


def test_import_rate_of_200k_rows(
    tmp_path: Path, tenant: str, pg: PG, capsys: pytest.CaptureFixture[str]
) -> None:
    n = 200_000
    f = tmp_path / "many.csv"
    with f.open("w") as out:
        out.write(HEADER)
        for i in range(n):
            tokens = f"fcm:{tenant}-{i}" if i % 2 else f"fcm:{tenant}-{i}|apns:{tenant}-{i}-b"
            out.write(f"{tenant},user-{i},user{i}@example.com,+1415555{i:06d},en-US,"
                      f'America/New_York,"{{""plan"": ""p{i % 3}""}}",{tokens}\n')  # fmt: skip
    t0 = time.monotonic()
    assert main(["recipients", "import", str(f)]) == 0
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    assert count(pg, "recipients", tenant) == n
    assert stored_addresses(pg, tenant) == n * 3 // 2
    with capsys.disabled():
        print(f"\n  recipients import: {n:,} rows in {took:.1f} s = {n / took:,.0f} rows/s "
              f"(end to end, the command says: {out.strip()})")  # fmt: skip


def test_preferences_naming_what_the_catalog_lacks_are_refused_by_line(
    tmp_path: Path, tenant: str, directory: Directory, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "people.jsonl"
    rows = [
        {"tenant": tenant, "id": "u1", "email": "a@example.com",
         "preferences": {"categories": ["billing"]}},
        {"tenant": tenant, "id": "u2", "email": "b@example.com",
         "preferences": {"categories": ["promos"]}},
        {"tenant": tenant, "id": "u3", "email": "c@example.com",
         "preferences": {"opt_in": {"rules": ["no-such-rule"]}}},
    ]  # fmt: skip
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["recipients", "import", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}:2: preferences.categories: unknown category 'promos'; the catalog's " in err
    assert "billing, onboarding, operations, security, shipping" in err, "the valid ones"
    assert f"{f}:3: preferences.opt_in.rules: unknown rule 'no-such-rule'" in err
    got = directory.lookup([(tenant, u) for u in ("u1", "u2", "u3")])
    assert set(got) == {(tenant, "u1")}, "the good row is imported, the others are not"
