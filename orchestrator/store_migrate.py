"""`dockyard store migrate`: copy a SQLite store into an empty PostgreSQL database, for a control plane that
outgrows one machine (docs/high-availability.md).

The SQLite file is opened exclusively (refused while an orchestrator runs on it), so the copy is of one moment;
the rows are copied as they are (bodies, task columns, meta with the epoch and the API tokens, encrypted secrets:
the secrets key file goes with them), in one transaction: a failed copy leaves the database empty.
"""
from __future__ import annotations

from orchestrator.store import TASK_COLUMNS, Store, StoreError, parse_store
from orchestrator.store_pg import PgStore

CHUNK = 5_000
_COLS = ", ".join(c for c, _ in TASK_COLUMNS)


def migrate(source: str, target: str) -> dict[str, int]:
    """Copy every row of the SQLite store ``source`` into the PostgreSQL store ``target``; counts per table."""
    if parse_store(source)[0] != "sqlite":
        raise StoreError(f"--from {source!r}: the source is a SQLite store file")
    if parse_store(target)[0] != "postgresql":
        raise StoreError(f"--to {target!r}: the target is postgresql://USER@HOST:PORT/DB")
    src = Store(parse_store(source)[1], exclusive=True)
    try:
        dst = PgStore(target)
        try:
            return _copy(src, dst)
        finally:
            dst.close()
    finally:
        src.close()


def _copy(src: Store, dst: PgStore) -> dict[str, int]:
    if dst.db.execute("SELECT EXISTS (SELECT 1 FROM records) OR EXISTS (SELECT 1 FROM secrets)").fetchone()[0]:  # type: ignore[index]
        raise StoreError(f"the database {dst.path} already holds records: migrate into an empty one")
    counts = {"records": 0, "secrets": 0, "meta": 0}
    with dst.db.transaction(), dst.db.cursor() as cur:
        meta = src.db.execute("SELECT key, value FROM meta WHERE key != 'schema_version'").fetchall()
        cur.executemany("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value", meta)
        counts["meta"] = len(meta)
        rows = src.db.execute(f"SELECT kind, key, body, {_COLS} FROM records")
        while chunk := rows.fetchmany(CHUNK):
            with cur.copy(f"COPY records (kind, key, body, {_COLS}) FROM STDIN") as copy:
                for row in chunk:
                    copy.write_row(row)
            counts["records"] += len(chunk)
        secrets = src.db.execute("SELECT name, version, value, created_at FROM secrets").fetchall()
        cur.executemany("INSERT INTO secrets VALUES (%s, %s, %s, %s)", secrets)
        counts["secrets"] = len(secrets)
    return counts
