"""PostgreSQL persistence of the control-plane records (``--store postgresql://USER@HOST:PORT/DB``).

The same schema, versions and methods as the SQLite :class:`orchestrator.store.Store` (records with the task
columns and the STOPPED partial indexes, meta, secrets), so the rest of the orchestrator does not know which one
it has; keys compare as bytes (``COLLATE "C"``), as in SQLite. Beside them, one lease row elects the leader among
the orchestrators sharing the database (:mod:`orchestrator.leader`): it is taken and renewed in transactions timed
by the database's ``now()``, and the epoch is bumped in the transaction that takes it. Once this store leads
(:meth:`PgStore.lead`), every write transaction first reads the lease row ``FOR SHARE`` and fails with
:class:`Fenced` if the epoch is no longer its own: a paused or partitioned ex-leader cannot write, and a takeover
waits for a write in flight to end (fencing in the database, not by clocks).

A lost connection is :class:`orchestrator.store_errors.StoreUnavailable` (the API answers 503); the next call
reconnects.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

import psycopg
from pydantic import BaseModel

from orchestrator.core.auth import TokenRecord
from orchestrator.models import Task
from orchestrator.store import (
    _NO_TASK,
    KINDS,
    SCHEMA_VERSION,
    STOPPED,
    TASK_COLUMNS,
    StoreError,
    _write_order,
    record_key,
    redact,
    stopped_page_query,
    task_columns,
)
from orchestrator.store_errors import StoreUnavailable

_COLS = ", ".join(c for c, _ in TASK_COLUMNS)
_PUT = (f"INSERT INTO records (kind, key, body, {_COLS}) VALUES (%s, %s, %s{', %s' * len(TASK_COLUMNS)}) "
        "ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body, "
        + ", ".join(f"{c} = excluded.{c}" for c, _ in TASK_COLUMNS))
_PUT_FROM_COPY = (f"INSERT INTO records (kind, key, body, {_COLS}) SELECT kind, key, body, {_COLS} FROM records_in "
                  "ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body, "
                  + ", ".join(f"{c} = excluded.{c}" for c, _ in TASK_COLUMNS))
COPY_FROM = 200  # rows from which a write goes through COPY
_C = 'TEXT COLLATE "C"'
# The versions of orchestrator.store, in PostgreSQL's types (a fresh database runs them all in one transaction).
MIGRATIONS: dict[int, list[str]] = {
    1: [f"CREATE TABLE IF NOT EXISTS records (kind {_C} NOT NULL, key {_C} NOT NULL, body TEXT NOT NULL, "
        "PRIMARY KEY (kind, key))"],
    2: [f"ALTER TABLE records ADD COLUMN IF NOT EXISTS cluster {_C}, ADD COLUMN IF NOT EXISTS status TEXT, "
        "ADD COLUMN IF NOT EXISTS desired TEXT, ADD COLUMN IF NOT EXISTS service TEXT, "
        "ADD COLUMN IF NOT EXISTS node TEXT, ADD COLUMN IF NOT EXISTS family TEXT, "
        "ADD COLUMN IF NOT EXISTS started_by TEXT, ADD COLUMN IF NOT EXISTS created_at DOUBLE PRECISION, "
        "ADD COLUMN IF NOT EXISTS stopped_at DOUBLE PRECISION",
        "CREATE INDEX IF NOT EXISTS task_live ON records (kind) WHERE status != 'STOPPED'",
        f"CREATE INDEX IF NOT EXISTS task_stopped_at ON records (stopped_at) WHERE {STOPPED}",
        f"CREATE INDEX IF NOT EXISTS task_stopped_cluster ON records (cluster, created_at, key) WHERE {STOPPED}",
        f"CREATE INDEX IF NOT EXISTS task_stopped_service ON records (cluster, service, created_at, key) WHERE {STOPPED}",
        f"CREATE INDEX IF NOT EXISTS task_stopped_node ON records (cluster, node, created_at, key) WHERE {STOPPED}",
        f"CREATE INDEX IF NOT EXISTS task_stopped_started_by ON records (cluster, started_by) WHERE {STOPPED}"],
    3: [f"CREATE TABLE IF NOT EXISTS secrets (name {_C} NOT NULL, version INTEGER NOT NULL, value BYTEA NOT NULL, "
        "created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (name, version))",
        # PostgreSQL only (SQLite has one orchestrator, by its lock): the leader's lease.
        "CREATE TABLE IF NOT EXISTS leader (id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, "
        "epoch BIGINT NOT NULL, expires TIMESTAMPTZ NOT NULL)"],
}
assert max(MIGRATIONS) == SCHEMA_VERSION, "a new schema version needs its PostgreSQL migration here"


class Fenced(StoreUnavailable):
    """This orchestrator's epoch is no longer the lease's: another one leads; nothing was written."""


class PgStore:
    """The records in a PostgreSQL database; one connection, autocommit, explicit transactions."""

    backend = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = redact(url)  # what messages show (orchestrator.secrets)
        self.epoch: int | None = None  # set by lead(): from then on every write is fenced by it
        self.holder: str | None = None
        self._db: psycopg.Connection | None = None
        self._connect()
        self._migrate()

    # ---- connection ------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        if self._db is None or self._db.closed or self._db.broken:
            try:
                self._db = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                           application_name="dockyard-orchestrator")
            except psycopg.OperationalError as exc:
                self._db = None
                raise StoreUnavailable(f"the store {self.path} cannot be reached: {_first_line(exc)}") from None
        return self._db

    @property
    def db(self) -> psycopg.Connection:
        return self._connect()

    def _run(self, fn, fenced: bool = True):
        """``fn(cursor)`` in one transaction (fenced once this store leads); a lost connection is StoreUnavailable."""
        con = self._connect()
        try:
            with con.transaction(), con.cursor() as cur:
                if fenced and self.epoch is not None:
                    self._fence(cur)
                return fn(cur)
        except psycopg.errors.DiskFull as exc:  # before OperationalError, its base: as SQLite's full file says
            raise StoreUnavailable(f"the store {self.path} cannot take writes: {_first_line(exc)} (nothing was "
                                   "written; free space on the database server's disk, then retry)") from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"the store {self.path} is unavailable: {_first_line(exc)}") from None

    def _fence(self, cur: psycopg.Cursor) -> None:
        row = cur.execute("SELECT epoch, holder FROM leader WHERE id = 1 FOR SHARE").fetchone()
        if row is None or row[0] != self.epoch or row[1] != self.holder:
            raise Fenced(f"fenced: epoch {self.epoch} no longer leads (the lease is at epoch {row[0] if row else '-'}); "
                         "nothing was written")

    def _read(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        try:
            return self._connect().execute(sql, args).fetchall()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"the store {self.path} is unavailable: {_first_line(exc)}") from None

    def _migrate(self) -> None:
        def step(cur: psycopg.Cursor) -> None:
            cur.execute("SELECT pg_advisory_xact_lock(7160)")  # peers starting together migrate one at a time
            cur.execute(f"CREATE TABLE IF NOT EXISTS meta (key {_C} PRIMARY KEY, value TEXT NOT NULL)")
            row = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"store {self.path} has schema version {version}, newer than this dockyard "
                                 f"({SCHEMA_VERSION}); upgrade dockyard")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for sql in MIGRATIONS[v]:
                    cur.execute(sql)
            cur.execute("INSERT INTO meta VALUES ('schema_version', %s) ON CONFLICT (key) DO UPDATE SET value = "
                        "excluded.value", (str(max(version, SCHEMA_VERSION)),))
        self._run(step, fenced=False)

    # ---- leadership (orchestrator.leader) ------------------------------------------------------
    def lead(self, holder: str, lease_seconds: float) -> int | None:
        """Take the lease if it is free, expired or ours, bumping the epoch in the same transaction; the new
        epoch, or None while another holds a live lease. From then on every write is fenced by it."""
        def take(cur: psycopg.Cursor) -> int | None:
            cur.execute("INSERT INTO leader VALUES (1, '', COALESCE((SELECT value::bigint FROM meta WHERE "
                        "key = 'epoch'), 0), now() - interval '1 second') ON CONFLICT (id) DO NOTHING")
            row = cur.execute(
                "UPDATE leader SET holder = %s, epoch = epoch + 1, expires = now() + make_interval(secs => %s) "
                "WHERE id = 1 AND (expires < now() OR holder = %s) RETURNING epoch",
                (holder, lease_seconds, holder)).fetchone()
            if row is None:
                return None
            cur.execute("INSERT INTO meta VALUES ('epoch', %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (str(row[0]),))
            return int(row[0])
        epoch = self._run(take, fenced=False)
        if epoch is not None:
            self.epoch, self.holder = epoch, holder
        return epoch

    def renew(self, lease_seconds: float) -> bool:
        """Extend our lease from the database's now(); False once another has taken it (we are fenced)."""
        assert self.holder is not None
        # By holder (unique per process), not epoch: the leader may have raised its epoch (raise_epoch) since.
        rows = self._run(lambda cur: cur.execute(
            "UPDATE leader SET expires = now() + make_interval(secs => %s) WHERE id = 1 AND holder = %s "
            "RETURNING 1", (lease_seconds, self.holder)).fetchall(), fenced=False)
        return bool(rows)

    def release(self) -> None:
        """Give the lease up now (a clean stop): a standby takes over without waiting for it to expire."""
        if self.epoch is not None:
            self._run(lambda cur: cur.execute("UPDATE leader SET expires = now() - interval '1 second' "
                                              "WHERE id = 1 AND holder = %s", (self.holder,)), fenced=False)

    def lease(self) -> tuple[str, int, float] | None:
        """(holder, epoch, seconds left) of the lease as the database sees it now."""
        rows = self._read("SELECT holder, epoch, EXTRACT(EPOCH FROM expires - now()) FROM leader WHERE id = 1")
        return (rows[0][0], int(rows[0][1]), float(rows[0][2])) if rows else None

    # ---- meta ------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = %s", (key,))
        return rows[0][0] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        self._run(lambda cur: cur.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET "
                                          "value = excluded.value", (key, value)))

    def next_epoch(self) -> int:
        """Increment and return the epoch (an orchestrator that does not elect: tests, tools)."""
        def bump(cur: psycopg.Cursor) -> int:
            row = cur.execute("INSERT INTO meta VALUES ('epoch', '1') ON CONFLICT (key) DO UPDATE SET value = "
                              "(meta.value::bigint + 1)::text RETURNING value").fetchone()
            assert row is not None
            return int(row[0])
        return self._run(bump)

    def raise_epoch(self, at_least: int) -> int:
        """Raise the stored epoch to ``at_least`` (core.fencing's re-assert); a leader raises its lease's epoch
        with it, in one fenced transaction, so a fenced ex-leader cannot re-assert itself back."""
        def up(cur: psycopg.Cursor) -> int:
            row = cur.execute("INSERT INTO meta VALUES ('epoch', %s) ON CONFLICT (key) DO UPDATE SET value = "
                              "GREATEST(meta.value::bigint, excluded.value::bigint)::text RETURNING value",
                              (str(at_least),)).fetchone()
            assert row is not None
            epoch = int(row[0])
            if self.epoch is not None:
                cur.execute("UPDATE leader SET epoch = %s WHERE id = 1", (epoch,))
            return epoch
        epoch = self._run(up)
        if self.epoch is not None:
            self.epoch = epoch
        return epoch

    # ---- API tokens ------------------------------------------------------------------------
    def put_token(self, rec: TokenRecord) -> None:
        self.set_meta(f"token:{rec.id}", json.dumps(dataclasses.asdict(rec)))

    def delete_token(self, token_id: str) -> bool:
        return self._run(lambda cur: cur.execute("DELETE FROM meta WHERE key = %s", (f"token:{token_id}",)).rowcount) > 0

    def tokens(self) -> list[TokenRecord]:
        rows = self._read("SELECT value FROM meta WHERE key LIKE %s", ("token:%",))
        return [TokenRecord(**json.loads(r[0])) for r in rows]

    # ---- records ---------------------------------------------------------------------------
    def load(self, kind: str) -> list[Any]:
        model = KINDS[kind]
        return [model.model_validate_json(r[0]) for r in self._read("SELECT body FROM records WHERE kind = %s", (kind,))]

    def load_live_tasks(self) -> list[Task]:
        rows = self._read("SELECT body FROM records WHERE kind = 'task' AND status != 'STOPPED'")
        return [Task.model_validate_json(r[0]) for r in rows]

    def write(self, puts: Iterable[tuple[str, BaseModel]], deletes: Iterable[tuple[str, str]] = ()) -> None:
        """Write records and deletions in one (fenced) transaction."""
        puts = sorted(puts, key=_write_order)
        rows = [(kind, record_key(kind, obj), obj.model_dump_json(),
                 *(task_columns(obj) if isinstance(obj, Task) else _NO_TASK)) for kind, obj in puts]
        dels = list(deletes)
        if not rows and not dels:
            return

        def go(cur: psycopg.Cursor) -> None:
            if len(rows) >= COPY_FROM:
                # COPY into a temporary table, then one upsert from it: 2-3x the rate of a pipelined executemany.
                cur.execute("CREATE TEMP TABLE IF NOT EXISTS records_in (LIKE records) ON COMMIT DELETE ROWS")
                with cur.copy(f"COPY records_in (kind, key, body, {_COLS}) FROM STDIN") as copy:
                    for row in {(r[0], r[1]): r for r in rows}.values():  # one row per key (ON CONFLICT needs it)
                        copy.write_row(row)
                cur.execute(_PUT_FROM_COPY)
            elif rows:
                cur.executemany(_PUT, rows)
            if dels:
                cur.executemany("DELETE FROM records WHERE kind = %s AND key = %s", dels)
        self._run(go)

    # ---- stopped tasks ---------------------------------------------------------------------
    def task(self, task_id: str) -> Task | None:
        rows = self._read("SELECT body FROM records WHERE kind = 'task' AND key = %s", (task_id,))
        return Task.model_validate_json(rows[0][0]) if rows else None

    def stopped_task_ids(self, cluster: str, prefix: str, limit: int | None = None) -> list[str]:
        rows = self._read(
            f"SELECT key FROM records WHERE kind = 'task' AND key >= %s AND key < %s AND cluster = %s AND {STOPPED}"
            " ORDER BY key LIMIT %s", (prefix, prefix + "\U0010ffff", cluster, limit))
        return [r[0] for r in rows]

    def stopped_tasks(self, cluster: str, service: str | None = None, node: str | None = None,
                      desired: str | None = None, family: str | None = None,
                      after: tuple[float, str] | None = None, limit: int = 500) -> list[Task]:
        sql, args = stopped_page_query("%s", cluster, service, node, desired, family, after, limit)
        return [Task.model_validate_json(r[0]) for r in self._read(sql, args)]

    def stopped_started_by(self, cluster: str, started_by: str) -> bool:
        return bool(self._read(f"SELECT 1 FROM records WHERE cluster = %s AND started_by = %s AND {STOPPED} LIMIT 1",
                               (cluster, started_by)))

    def count_stopped_tasks(self) -> int:
        return int(self._read(f"SELECT COUNT(*) FROM records WHERE {STOPPED}")[0][0])

    def delete_stopped_tasks(self, stopped_before: float) -> int:
        return self._run(lambda cur: cur.execute(f"DELETE FROM records WHERE {STOPPED} AND stopped_at < %s",
                                                 (stopped_before,)).rowcount)

    # ---- secrets ---------------------------------------------------------------------------
    def add_secret_version(self, name: str, value: bytes, created_at: float, keep: int) -> int:
        def add(cur: psycopg.Cursor) -> int:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"secret:{name}",))
            row = cur.execute("SELECT MAX(version) FROM secrets WHERE name = %s", (name,)).fetchone()
            version = ((row[0] if row else None) or 0) + 1
            cur.execute("INSERT INTO secrets VALUES (%s, %s, %s, %s)", (name, version, value, created_at))
            cur.execute("DELETE FROM secrets WHERE name = %s AND version <= %s", (name, version - keep))
            return version
        return self._run(add)

    def secret_versions(self, name: str | None = None) -> list[tuple[str, int, float]]:
        where, args = ("WHERE name = %s", (name,)) if name is not None else ("", ())
        return [tuple(r) for r in self._read(f"SELECT name, version, created_at FROM secrets {where} "
                                             "ORDER BY name, version", args)]  # type: ignore[misc]

    def secret_value(self, name: str, version: int | None = None) -> tuple[int, bytes] | None:
        if version is None:
            rows = self._read("SELECT version, value FROM secrets WHERE name = %s ORDER BY version DESC LIMIT 1", (name,))
        else:
            rows = self._read("SELECT version, value FROM secrets WHERE name = %s AND version = %s", (name, version))
        return (rows[0][0], bytes(rows[0][1])) if rows else None

    def delete_secret(self, name: str) -> int:
        return self._run(lambda cur: cur.execute("DELETE FROM secrets WHERE name = %s", (name,)).rowcount)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
