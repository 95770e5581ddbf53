"""The local Postgres works with psycopg 3: DDL, COPY in, read back."""

from __future__ import annotations

import psycopg


def test_copy_and_read_back(pg: psycopg.Connection[tuple[object, ...]], unique: str) -> None:
    table = f"test_copy_{unique}"
    pg.execute(f"create table {table} (id int primary key, body text not null, at timestamptz)")
    try:
        rows = [(i, f"body {i} with tab\tand newline\n", None) for i in range(500)]
        with pg.cursor() as cur, cur.copy(f"copy {table} (id, body, at) from stdin") as copy:
            for r in rows:
                copy.write_row(r)
        got = pg.execute(f"select id, body, at from {table} order by id").fetchall()
        assert got == rows
    finally:
        pg.execute(f"drop table {table}")
