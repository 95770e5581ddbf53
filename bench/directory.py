"""The recipient-directory workload of `make bench` (issue 14, "Speed"): two rows.

- `directory-import`: generate a directory of `DirectorySize.recipients` recipients (1,000,000;
  100,000 with --quick) as a CSV (docs/recipients.md "Rate" shape: 1.5 push tokens each, an
  email and a phone, attributes on all, an opt-out on 20%) and load it with the real
  `tidings recipients import` as a subprocess: rows/s (wall time of the command, and the
  rate it prints), its CPU and Postgres's, and the Postgres size the rows take
  (`pg_total_relation_size` of recipients, after minus before).
  The import IS the generation step: it runs once per bench run, before `route-directory`,
  whether or not this row was asked for (the row is then only reported when asked).
- `route-directory`: the route stage alone on the same events twice, ABBA (plain, directory,
  directory, plain, like harness `_paired`): once with the 50 rules of the email catalog
  (bench/workload.py) addressed to plain email addresses (`route-directory-plain`), once
  with the same rules addressed to `- user:` ids of that directory, with `route.caps` on.
  Reported: events/s of each window, the ratio of the sums (goal ≥ 0.7), peak RSS of each.

The events are the bench's pool (bench/workload.py EventPool) with the tenant set to the
run's (`bench-<run>`, the directory's tenant: nothing else has rows there) and, per record,
the customer and the account manager replaced by two recipients drawn uniformly at random
(seeded) from the directory: `user-K` with email `userK@example.com`. The plain catalog sends
to those emails, the directory one to those ids (their `email` field): the same notifications
per event, so the ratio is what resolution, preferences and caps cost. The push tokens are
not sent to, but every lookup reads them (the lookup returns every address of a recipient).

`cleanup(w)` deletes the tenant's rows (the addresses are inside them) and its cap
keys in Redis. Traffic only to the local stack (the harness refuses anything else).
"""

from __future__ import annotations

import os
import random
import re
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.accounting import local_services
from bench.harness import (
    PY,
    ROOT,
    Plan,
    World,
    produce,
    run_route,
)
from bench.workload import EventPool, Record

__all__ = [
    "PLAIN",
    "SCENARIOS",
    "DirectoryEvents",
    "cleanup",
    "markdown",
    "ratios",
    "run",
    "write_csv",
]

IMPORT, ROUTE = "directory-import", "route-directory"
PLAIN = "route-directory-plain"  # the baseline the ROUTE row is paired with (not a scenario)
SCENARIOS = (IMPORT, ROUTE)

# route.caps of the directory row: a daily budget across everything and an hourly email cap
# (suppress: a deferred notification would go to the retry topics, which route alone doesn't
# read back).
CAPS: tuple[dict[str, Any], ...] = (
    {"name": "daily-budget", "scope": "recipient", "limit": 10, "window": "1d"},
    {"name": "email-hourly", "scope": "recipient_channel", "channels": ["email"], "limit": 3,
     "window": "1h"},
)  # fmt: skip
# The opt-outs of one recipient in five (every other one: marketing, or two unused channels).
_OPT_OUTS = ('"{""categories"": [""marketing""]}"', '"{""channels"": [""sms"", ""push""]}"')


@dataclass(frozen=True)
class DirectorySize:
    recipients: int
    events: int  # pre-produced for the four route windows (they must not run dry)


FULL = DirectorySize(recipients=1_000_000, events=250_000)
QUICK = DirectorySize(recipients=100_000, events=40_000)


def tenant_of(w: World) -> str:
    return f"bench-{w.run}"


def write_csv(path: Path, n: int, tenant: str) -> int:
    """The directory as an import CSV (docs/recipients.md "Rate"); returns its bytes."""
    with path.open("w") as f:
        f.write("tenant,id,email,phone,locale,timezone,attributes,preferences,push_tokens\n")
        for i in range(n):
            toks = f"fcm:t-{tenant}-{i}" if i % 2 else f"fcm:t-{tenant}-{i}|apns:t-{tenant}-{i}-b"
            prefs = _OPT_OUTS[(i // 5) % 2] if i % 5 == 0 else ""
            f.write(f'{tenant},user-{i},user{i}@example.com,+1415{i % 10**7:07d},en-US,'
                    f'America/New_York,"{{""plan"": ""p{i % 3}""}}",{prefs},{toks}\n')  # fmt: skip
    return path.stat().st_size


# ---------------------------------------------------------------- events

_TENANT = re.compile(rb'"tenantid": "[^"]*"')
_CUSTOMER = re.compile(rb'"customer": \{"id": "[^"]*", "name": ("[^"]*"), "email": "[^"]*"')
_ACCOUNT = re.compile(rb'"account": \{"id": "[^"]*", "manager_email": "[^"]*"')
_U1, _E1, _U2, _E2 = b"@@U1@@", b"@@E1@@", b"@@U2@@", b"@@E2@@"


class DirectoryEvents:
    """`EventPool`'s events for one tenant, customer and manager drawn from the directory."""

    def __init__(self, pool: EventPool, tenant: str, recipients: int, n: int, seed: int) -> None:
        self._pool = pool
        self._tenant = tenant.encode()
        rng = random.Random(seed * 1_000_003 + recipients)
        self._who = [(rng.randrange(recipients), rng.randrange(recipients)) for _ in range(n)]
        self._cache: dict[int, tuple[bytes, list[tuple[str, bytes]]]] = {}

    def _template(self, k: int) -> tuple[Record, bytes, list[tuple[str, bytes]]]:
        """Pooled event `k` (id `@@ID@@-k`) for the tenant, with the recipients' placeholders."""
        r = self._pool.record(k, "@@ID@@")
        got = self._cache.get(k)
        if got is None:
            v = _TENANT.sub(b'"tenantid": "' + self._tenant + b'"', r.value)
            v = _CUSTOMER.sub(rb'"customer": {"id": "@@U1@@", "name": \1, "email": "@@E1@@"', v)
            v = _ACCOUNT.sub(b'"account": {"id": "@@U2@@", "manager_email": "@@E2@@"', v)
            hdrs = [(h, self._tenant if h == "ce_tenantid" else b) for h, b in r.headers]
            got = self._cache[k] = (v, hdrs)
        return r, *got

    def record(self, i: int, prefix: str) -> Record:
        """Event `i` with id `<prefix>-<i>`, as EventPool.record, for directory users."""
        k = i % len(self._pool)
        r, value, headers = self._template(k)
        a, b = self._who[i % len(self._who)]
        eid, ph = f"{prefix}-{i}".encode(), b"@@ID@@-%d" % k
        value = (
            value.replace(ph, eid, 1)
            .replace(_U1, b"user-%d" % a).replace(_E1, b"user%d@example.com" % a)
            .replace(_U2, b"user-%d" % b).replace(_E2, b"user%d@example.com" % b)
        )  # fmt: skip
        headers = [(h, eid if v == ph else v) for h, v in headers]
        return Record(r.topic_index, value, headers, r.valid)


def _catalogs(w: World) -> None:
    """`w.catalogs` "directory-plain" (the email catalog) and "directory" (to `- user:`)."""
    src = w.catalogs["email"]
    w.catalogs["directory-plain"] = src
    dst = w.tmp / "catalog-directory"
    if dst.exists():
        return
    import shutil

    shutil.copytree(src, dst)
    doc = yaml.safe_load((src / "rules.yaml").read_text())
    for rule in doc["rules"]:
        manager = rule["id"].endswith("-manager")
        rule["recipients"] = [
            {"user": "event.data.account.id" if manager else "event.data.customer.id"}
        ]
    (dst / "rules.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    w.catalogs["directory"] = dst


# ---------------------------------------------------------------- the rows

_STATE: dict[str, dict[str, Any]] = {}  # run → what the import step did (once per run)


def _pg() -> Any:
    import psycopg

    from schemas.settings import load_settings

    return psycopg.connect(load_settings().postgres.conninfo(), autocommit=True)


def _table_bytes(tenant: str) -> tuple[int, float]:
    """(pg_total_relation_size of recipients, the share of its rows that are `tenant`'s):
    the table may hold free space a delete left (reused, not returned), so the size after
    an import minus the size before can be anything down to 0."""
    with _pg() as conn:
        row = conn.execute(
            "select pg_total_relation_size('recipients'), (select count(*) from recipients), "
            "(select count(*) from recipients where tenant = %s)",
            (tenant,),
        ).fetchone()
    size, rows, mine = row if row else (0, 0, 0)
    return int(size), (mine / rows if rows else 0.0)


def _import(w: World, quick: bool) -> dict[str, Any]:
    """Generate the directory and import it with the CLI (once per run); the import row."""
    done = _STATE.get(w.run)
    if done is not None:
        return done
    size = QUICK if quick else FULL
    tenant = tenant_of(w)
    path = w.tmp / "directory.csv"
    t0 = time.monotonic()
    nbytes = write_csv(path, size.recipients, tenant)
    gen_s = time.monotonic() - t0
    print(f"  directory: wrote {size.recipients:,} rows ({nbytes / 2**20:.0f} MiB) in "
          f"{gen_s:.1f} s; importing", flush=True)  # fmt: skip
    before, _ = _table_bytes(tenant)
    pg = [s for s in local_services() if s.name == "postgres"]
    pg0 = pg[0].cpu_s() if pg else 0.0
    argv = [str(Path(PY).parent / "tidings"), "recipients", "import", str(path)]
    # The opt-outs name the bench catalog's `marketing` category: the import checks
    # preferences against the catalog, so it must read the bench's, not ./catalog.
    _catalogs(w)
    env = {**os.environ, "TIDINGS_CATALOG__PATH": str(w.catalogs["directory"])}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)  # fmt: skip
    took = time.monotonic() - t0
    pg_cpu = (pg[0].cpu_s() - pg0) if pg else None
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli_cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    after, share = _table_bytes(tenant)
    out = proc.stdout.strip().splitlines()
    said = out[-1] if out else proc.stderr.strip()[-300:]
    m = re.search(r"\(([\d,]+) rows/s\)", said)
    if proc.returncode != 0:
        raise RuntimeError(f"{IMPORT}: the import failed ({proc.returncode}): {said}")
    r: dict[str, Any] = {
        "tenant": tenant,
        "recipients": size.recipients,
        "addresses": size.recipients * 3 // 2,
        "csv_mib": round(nbytes / 2**20, 1),
        "generate_s": round(gen_s, 1),
        "import_s": round(took, 2),
        "rows_per_s": round(size.recipients / took, 1),
        "cli_rows_per_s": int(m.group(1).replace(",", "")) if m else None,
        "cli_said": said,
        "cli_cpu_s": round(cli_cpu, 2),
        "postgres_cpu_s": round(pg_cpu, 2) if pg_cpu is not None else None,
        "table_bytes_before": before,
        "table_bytes_after": after,
        "tenant_row_share": round(share, 6),
        # The tables' size after the import times the share of their rows that are the run's.
        "directory_mb": round(after * share / 2**20, 1),
        "bytes_per_recipient": round(after * share / size.recipients),
    }
    with _pg() as conn:  # statistics for route's lookups, as autovacuum would give later
        conn.execute("analyze recipients")
    _STATE[w.run] = r
    return r


def _config(w: World, plan: Plan, name: str, mix: str, caps: bool) -> Path:
    cfg = w.config(name, "directory", plan, mix)
    if caps:
        doc = yaml.safe_load(cfg.read_text())
        doc.setdefault("route", {})["caps"] = [dict(c) for c in CAPS]
        cfg.write_text(yaml.safe_dump(doc))
    return cfg


def _route_pair(
    w: World, plan: Plan, pool: EventPool, quick: bool, seed: int, prof: Path | None
) -> dict[str, Any]:
    """The ROUTE row: plain, directory, directory, plain over the same events."""
    imported = _import(w, quick)
    size = QUICK if quick else FULL
    _catalogs(w)
    events = DirectoryEvents(pool, tenant_of(w), size.recipients, size.events, seed)
    secs = produce(w, events, "directory", size.events, f"dir-{w.run}",  # type: ignore[arg-type]
                   plan.in_partitions)  # fmt: skip
    print(f"  directory: produced {size.events:,} events in {secs:.1f} s", flush=True)
    cfgs = {
        PLAIN: _config(w, plan, PLAIN, "directory-plain", caps=False),
        ROUTE: _config(w, plan, ROUTE, "directory", caps=True),
    }
    got: dict[str, list[dict[str, Any]]] = {PLAIN: [], ROUTE: []}
    for which in (PLAIN, ROUTE, ROUTE, PLAIN):
        got[which].append(run_route(w, plan, prof, which, cfgs[which]))
    r = dict(got[ROUTE][-1])
    eps_p = sum(float(x.get("events_per_s") or 0) for x in got[PLAIN])
    eps_d = sum(float(x.get("events_per_s") or 0) for x in got[ROUTE])
    r["paired"] = {
        "base": PLAIN,
        "base_events_per_s": [x.get("events_per_s") for x in got[PLAIN]],
        "events_per_s": [x.get("events_per_s") for x in got[ROUTE]],
        "base_notifications_per_s": [x.get("notifications_per_s") for x in got[PLAIN]],
        "notifications_per_s": [x.get("notifications_per_s") for x in got[ROUTE]],
        "base_cpu_s_per_1k": [x.get("cpu_s_per_1k_events") for x in got[PLAIN]],
        "cpu_s_per_1k": [x.get("cpu_s_per_1k_events") for x in got[ROUTE]],
        "base_peak_rss_mb": [x.get("peak_rss_mb") for x in got[PLAIN]],
        "peak_rss_mb": [x.get("peak_rss_mb") for x in got[ROUTE]],
        "base_ran_dry": [bool(x.get("ran_dry")) for x in got[PLAIN]],
        "ran_dry": [bool(x.get("ran_dry")) for x in got[ROUTE]],
        "eps_ratio": round(eps_d / eps_p, 4) if eps_p else None,
    }
    r["directory"] = {k: imported[k] for k in ("recipients", "directory_mb", "bytes_per_recipient")}
    r["caps"] = [dict(c) for c in CAPS]
    return r


def run(
    w: World, plan: Plan, name: str, pool: EventPool, *, quick: bool, seed: int,
    prof: Path | None,
) -> dict[str, Any]:  # fmt: skip
    """Scenario `name` (one of SCENARIOS): its result row."""
    if name == IMPORT:
        return dict(_import(w, quick))
    return _route_pair(w, plan, pool, quick, seed, prof)


def cleanup(w: World) -> None:
    """Delete the run's directory rows (their addresses are inside) and cap keys."""
    if w.run not in _STATE:
        return
    tenant = tenant_of(w)
    try:
        with _pg() as conn:
            n = conn.execute("delete from recipients where tenant = %s", (tenant,)).rowcount
            conn.execute("vacuum recipients")
        print(f"  directory: deleted {n:,} recipients of {tenant}", flush=True)
    except Exception as exc:  # cleanup must not hide the results
        print(f"  warning: directory cleanup failed: {exc}", flush=True)
    try:
        import redis

        from schemas.settings import load_settings

        r = redis.Redis.from_url(load_settings().redis.url.get_secret_value())
        cursor, gone, rounds = 0, 0, 0
        while rounds < 100_000:  # bounded: SCAN visits each key once
            cursor, keys = r.scan(cursor, match=f"tidings:cap:*:{tenant}:*", count=10_000)
            if keys:
                gone += int(r.delete(*keys))
            rounds += 1
            if cursor == 0:
                break
        print(f"  directory: deleted {gone:,} cap keys", flush=True)
    except Exception as exc:
        print(f"  warning: Redis cleanup failed: {exc}", flush=True)
    _STATE.pop(w.run, None)


# ---------------------------------------------------------------- the report


def ratios(sc: dict[str, Any]) -> dict[str, float | None]:
    p = (sc.get(ROUTE) or {}).get("paired")
    if not p:
        return {}
    return {"route with directory/without (events/s)": p["eps_ratio"]}


def print_row(name: str, r: dict[str, Any]) -> None:
    if name == IMPORT:
        print(f"  {name:<27} {r['rows_per_s']:>10.0f} rows/s    {r['recipients']:,} rows in "
              f"{r['import_s']:.1f} s; {r['directory_mb']:.0f} MB in Postgres  "
              f"[{r.get('step_s', 0):.0f} s]", flush=True)  # fmt: skip
        return
    p = r["paired"]
    print(f"  {name:<27} {', '.join(f'{x:.0f}' for x in p['events_per_s'])} events/s vs plain "
          f"{', '.join(f'{x:.0f}' for x in p['base_events_per_s'])}: ratio "
          f"{p['eps_ratio'] or 0:.3f}; RSS {max(p['peak_rss_mb'])} vs "
          f"{max(p['base_peak_rss_mb'])} MB  [{r.get('step_s', 0):.0f} s]", flush=True)  # fmt: skip


def _n(v: Any, nd: int = 0) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def markdown(sc: dict[str, Any]) -> list[str]:
    """The report's section on the directory rows (nothing when neither ran)."""
    imp, rd = sc.get(IMPORT), sc.get(ROUTE)
    if not imp and not rd:
        return []
    lines = ["", "## The recipient directory (issue 14)", ""]
    if imp and "error" in imp:
        lines.append(f"`{IMPORT}` failed: {imp['error'][:200]}")
    elif imp:
        lines += [
            f"`{IMPORT}`: `tidings recipients import` (a subprocess) of a generated CSV of "
            f"{imp['recipients']:,} recipients ({imp['csv_mib']} MiB; 1.5 push tokens each, "
            "an email, a phone, attributes, an opt-out on 20%) into the directory.",
            "",
            "| rows | seconds | rows/s | rows/s (as the command says) | command CPU s "
            "| Postgres CPU s | directory in Postgres MB (tables + indexes) | bytes / recipient |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {imp['recipients']:,} | {_n(imp['import_s'], 1)} | {_n(imp['rows_per_s'])} | "
            f"{_n(imp.get('cli_rows_per_s'))} | {_n(imp.get('cli_cpu_s'), 1)} | "
            f"{_n(imp.get('postgres_cpu_s'), 1)} | "
            f"{_n(imp['directory_mb'], 1)} | {_n(imp['bytes_per_recipient'])} |",
        ]
    if rd and "error" in rd:
        lines += ["", f"`{ROUTE}` failed: {rd['error'][:200]}"]
    elif rd:
        p = rd["paired"]
        lines += [
            "",
            f"`{ROUTE}`: the route stage alone, ABBA (plain, directory, directory, plain) over "
            "the same events: the 50 email rules addressed to plain addresses, then to "
            f"`- user:` ids of the {rd['directory']['recipients']:,}-recipient directory "
            "(drawn uniformly at random), with `route.caps` on "
            "(a daily budget of 10, 3 emails an hour). Route does not cache the directory: "
            "one Postgres round trip per consume batch; its size in Postgres is above.",
            "",
            "| row | events/s | notifications/s | CPU s / 1,000 events | peak RSS MB |",
            "|---|---|---|---|---|",
            f"| plain addresses | {', '.join(_n(x) for x in p['base_events_per_s'])} | "
            f"{', '.join(_n(x) for x in p['base_notifications_per_s'])} | "
            f"{', '.join(_n(x, 3) for x in p['base_cpu_s_per_1k'])} | "
            f"{', '.join(_n(x) for x in p['base_peak_rss_mb'])} |",
            f"| `user:` via the directory, caps on | {', '.join(_n(x) for x in p['events_per_s'])} "
            f"| {', '.join(_n(x) for x in p['notifications_per_s'])} | "
            f"{', '.join(_n(x, 3) for x in p['cpu_s_per_1k'])} | "
            f"{', '.join(_n(x) for x in p['peak_rss_mb'])} |",
            "",
            f"With the directory ÷ without (events/s, sums of the pairs): "
            f"**{_n(p['eps_ratio'], 3)}** (goal ≥ 0.7)."
            + (" Some windows ran out of input." if any(p["ran_dry"] + p["base_ran_dry"]) else ""),
        ]
    return lines
