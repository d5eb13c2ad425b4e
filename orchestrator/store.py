"""SQLite (WAL) persistence of the control-plane records.

The store is the source of truth across restarts. The orchestrator keeps the live records in
memory (:mod:`orchestrator.state`) and writes changed records back here in one transaction
per reconcile pass (or per API call), so a burst of 10,000 placements is one commit, not
10,000. STOPPED tasks (kept listable for 24 h) live only here: a task row carries the fields
they are looked up by (cluster, status, service, node, ...) as columns, with partial indexes
over the STOPPED rows, so reading them, listing them and deleting the old ones are queries,
not scans of memory.

Schema versions: 1 = one ``records`` table (kind, key, JSON body); 2 = the task columns and
indexes (an existing version-1 store is upgraded in place, the columns filled from the bodies);
3 = the ``secrets`` table (versions of each secret, values Fernet-encrypted by
:mod:`orchestrator.secrets`; this module never sees a plaintext value).
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import operator
import os
import sqlite3
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from orchestrator.autoscaling_models import ScalableTarget
from orchestrator.core.auth import TokenRecord
from orchestrator.models import Cluster, LoadBalancer, Node, Service, TargetGroup, Task, TaskDefinition
from orchestrator.store_errors import StoreUnavailable

SCHEMA_VERSION = 3
CACHE_KIB = 16 * 1024
KINDS: dict[str, type[BaseModel]] = {
    "cluster": Cluster,
    "taskdef": TaskDefinition,
    "service": Service,
    "task": Task,
    "node": Node,
    "targetgroup": TargetGroup,
    "loadbalancer": LoadBalancer,
    "scalabletarget": ScalableTarget,  # a service's auto scaling (orchestrator.autoscaler)
}


def default_store_path() -> Path:
    """$DOCKYARD_STORE, else $XDG_DATA_HOME/dockyard/dockyard.db (~/.local/share/dockyard/dockyard.db)."""
    if os.environ.get("DOCKYARD_STORE"):
        return Path(os.environ["DOCKYARD_STORE"])
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "dockyard" / "dockyard.db"


# The columns of a task row beside its body (NULL in the rows of the other kinds), and the
# Task field each one holds.
TASK_COLUMNS = (("cluster", "cluster"), ("status", "lastStatus"), ("desired", "desiredStatus"),
                ("service", "serviceName"), ("node", "nodeId"), ("family", "family"),
                ("started_by", "startedBy"), ("created_at", "createdAt"), ("stopped_at", "stoppedAt"))
_COLS = ", ".join(c for c, _ in TASK_COLUMNS)
_NO_TASK = (None,) * len(TASK_COLUMNS)
# An upsert, not INSERT OR REPLACE: REPLACE deletes the row and inserts it again, updating every
# index; an update in place touches only the indexes whose columns changed (~40 % less per row).
_PUT = (f"INSERT INTO records (kind, key, body, {_COLS}) VALUES (?, ?, ?{', ?' * len(TASK_COLUMNS)}) "
        "ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body, "
        + ", ".join(f"{c} = excluded.{c}" for c, _ in TASK_COLUMNS))
_TASK_FIELDS = operator.attrgetter(*(f for _, f in TASK_COLUMNS))
STOPPED = "status = 'STOPPED'"  # the literal condition of the partial indexes (queries repeat it)

# Version 1 -> 2: the task columns and the indexes over them. Only the STOPPED rows are indexed
# by cluster, service, node and startedBy (the live tasks are read from memory); the not-STOPPED
# ones are indexed once, for the load at start.
_V2_INDEXES = f"""
CREATE INDEX IF NOT EXISTS task_live ON records (kind) WHERE status != 'STOPPED';
CREATE INDEX IF NOT EXISTS task_stopped_at ON records (stopped_at) WHERE {STOPPED};
CREATE INDEX IF NOT EXISTS task_stopped_cluster ON records (cluster, created_at, key) WHERE {STOPPED};
CREATE INDEX IF NOT EXISTS task_stopped_service ON records (cluster, service, created_at, key) WHERE {STOPPED};
CREATE INDEX IF NOT EXISTS task_stopped_node ON records (cluster, node, created_at, key) WHERE {STOPPED};
CREATE INDEX IF NOT EXISTS task_stopped_started_by ON records (cluster, started_by) WHERE {STOPPED};
"""


def _write_order(put: tuple[str, BaseModel]) -> tuple[int, float]:
    obj = put[1]
    return (1, obj.createdAt) if isinstance(obj, Task) else (0, 0.0)


def task_columns(t: Task) -> tuple:
    return _TASK_FIELDS(t)


def record_key(kind: str, obj: BaseModel) -> str:
    if isinstance(obj, Task):  # the most frequent first
        return obj.taskId
    if isinstance(obj, Node):
        return f"{obj.cluster}/{obj.nodeId}"
    if isinstance(obj, Cluster):
        return obj.clusterName
    if isinstance(obj, TaskDefinition):
        return obj.ref
    if isinstance(obj, Service):
        return f"{obj.cluster}/{obj.serviceName}"
    if isinstance(obj, (TargetGroup, LoadBalancer)):
        return f"{obj.cluster}/{obj.spec.name}"
    if isinstance(key := getattr(obj, "record_key", None), str):  # newer kinds name their own key
        return key
    raise TypeError(f"not a record: {kind}")


class StoreError(RuntimeError):
    pass


class StoreInUse(StoreError):
    """Another orchestrator holds the SQLite store (two would both lead: two epochs, one set of agents)."""


SCHEMES = ("sqlite", "postgresql", "postgres")


def parse_store(spec: str | Path) -> tuple[str, str]:
    """("sqlite", path) or ("postgresql", url) of a ``--store`` value: a file path, ``sqlite:///PATH`` or
    ``postgresql://USER@HOST:PORT/DB``. Any other ``SCHEME://`` is refused (it is not a file name)."""
    text = str(spec)
    if "://" not in text:
        return "sqlite", text
    scheme = text.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = urllib.parse.urlsplit(text).path
        if not path:
            raise StoreError(f"--store {text!r}: give the file, e.g. sqlite:///var/lib/dockyard/dockyard.db")
        return "sqlite", path
    if scheme in ("postgresql", "postgres"):
        u = urllib.parse.urlsplit(text)
        if not u.hostname or not u.path.strip("/"):
            raise StoreError(f"--store {redact(text)!r}: give host and database, e.g. postgresql://dockyard@db:5432/dockyard")
        return "postgresql", text
    raise StoreError(f"--store {redact(text)!r}: unsupported scheme {scheme!r}; use a file path, sqlite:///PATH "
                     "or postgresql://USER@HOST:PORT/DB")


def redact(url: str) -> str:
    """``url`` without its password (for logs and messages)."""
    u = urllib.parse.urlsplit(url)
    if u.password is None:
        return url
    netloc = f"{u.username}:***@{u.hostname}" + (f":{u.port}" if u.port else "")
    return urllib.parse.urlunsplit(u._replace(netloc=netloc))


def files_base(spec: str | Path) -> Path:
    """The path the orchestrator's own files go beside (STORE.secrets-key, STORE.admin-token): the SQLite
    file, or for a database a name in the user data directory (give --secrets-key-file on every peer)."""
    kind, where = parse_store(spec)
    if kind == "sqlite":
        return Path(where)
    u = urllib.parse.urlsplit(where)
    return default_store_path().parent / f"postgresql-{u.hostname}-{u.port or 5432}-{u.path.strip('/')}"


def open_store(spec: str | Path, exclusive: bool = True):
    """The store of a ``--store`` value (parse_store). ``exclusive``: a SQLite file is locked for this
    process (StoreInUse if another holds it); a PostgreSQL database is shared by design (leases)."""
    kind, where = parse_store(spec)
    if kind == "postgresql":
        from orchestrator.store_pg import PgStore  # psycopg only when used
        return PgStore(where)
    return Store(where, exclusive=exclusive)


def stopped_page_query(ph: str, cluster: str, service: str | None, node: str | None, desired: str | None,
                       family: str | None, after: tuple[float, str] | None, limit: int) -> tuple[str, tuple]:
    """The SQL and arguments of a page of STOPPED tasks (both backends; ``ph`` is the driver's placeholder)."""
    where: list[str] = [f"cluster = {ph}", STOPPED]
    args: list[object] = [cluster]
    for col, value in (("service", service), ("node", node), ("desired", desired), ("family", family)):
        if value is not None:
            where.append(f"{col} = {ph}")
            args.append(value)
    if after is not None:
        where.append(f"(created_at, key) > ({ph}, {ph})")
        args += list(after)
    return (f"SELECT body FROM records WHERE {' AND '.join(where)} ORDER BY created_at, key LIMIT {ph}",
            (*args, limit))


class Store:
    """Records as JSON rows, one table; a meta table holds the schema version and the epoch."""

    backend = "sqlite"

    def __init__(self, path: str | Path, exclusive: bool = False) -> None:
        self.path = Path(path)
        self._lock: int | None = None
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if exclusive:
                self._lock = lock_file(self.path)
        try:
            self._open()
        except BaseException:
            self._unlock()
            raise

    def _open(self) -> None:
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # 16 MiB of page cache (SQLite's default is 2 MiB): a pass that rewrites 10k task rows
        # touches a few thousand pages of a table that grows with the kept history; with the
        # default each page was read back and spilled several times (-25 % per row).
        self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._migrate()

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema version {version}, newer than this dockyard ({SCHEMA_VERSION}); upgrade dockyard"
            )
        if version < 1:
            self.db.executescript(
                """
                BEGIN;
                CREATE TABLE IF NOT EXISTS records (
                    kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL,
                    PRIMARY KEY (kind, key));
                INSERT OR REPLACE INTO meta VALUES ('schema_version', '1');
                COMMIT;
                """
            )
        if version < 2:
            self._migrate_v2()
        if version < 3:
            self.db.executescript(
                """
                BEGIN;
                CREATE TABLE IF NOT EXISTS secrets (
                    name TEXT NOT NULL, version INTEGER NOT NULL, value BLOB NOT NULL, created_at REAL NOT NULL,
                    PRIMARY KEY (name, version));
                INSERT OR REPLACE INTO meta VALUES ('schema_version', '3');
                COMMIT;
                """
            )

    def _migrate_v2(self) -> None:
        """Add the task columns, fill them from the task bodies, index them: one transaction."""
        cur = self.db.cursor()
        cur.execute("BEGIN")
        try:
            have = {r[1] for r in cur.execute("PRAGMA table_info(records)")}
            for col, _ in TASK_COLUMNS:
                if col not in have:
                    cur.execute(f"ALTER TABLE records ADD COLUMN {col}")
            rows = cur.execute("SELECT key, body FROM records WHERE kind='task'").fetchall()
            fill = []
            for key, body in rows:
                d = json.loads(body)
                fill.append((*(d.get(f) for _, f in TASK_COLUMNS), key))
            sets = ", ".join(f"{c} = ?" for c, _ in TASK_COLUMNS)
            cur.executemany(f"UPDATE records SET {sets} WHERE kind='task' AND key=?", fill)
            for statement in _V2_INDEXES.split(";"):  # not executescript: it would COMMIT first
                if statement.strip():
                    cur.execute(statement)
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', '2')")
            cur.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                cur.execute("ROLLBACK")
            raise

    # ---- meta ------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def next_epoch(self) -> int:
        """Increment and return the orchestrator incarnation (the fencing token on the bus)."""
        epoch = int(self.get_meta("epoch", "0") or 0) + 1
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (str(epoch),))
        return epoch

    def raise_epoch(self, at_least: int) -> int:
        """Raise the stored epoch to ``at_least`` (never lower it) and return the stored one: the orchestrator
        re-asserting over a newer epoch it saw (core.fencing) keeps it here, so its successor starts above it."""
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            epoch = max(int(self.get_meta("epoch", "0") or 0), at_least)
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (str(epoch),))
            cur.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                cur.execute("ROLLBACK")
            raise
        return epoch

    # ---- API tokens (hashed; orchestrator.core.auth) ---------------------------------------------
    def put_token(self, rec: TokenRecord) -> None:
        self.set_meta(f"token:{rec.id}", json.dumps(dataclasses.asdict(rec)))

    def delete_token(self, token_id: str) -> bool:
        return self.db.execute("DELETE FROM meta WHERE key=?", (f"token:{token_id}",)).rowcount > 0

    def tokens(self) -> list[TokenRecord]:
        rows = self.db.execute("SELECT value FROM meta WHERE key LIKE 'token:%'").fetchall()
        return [TokenRecord(**json.loads(r[0])) for r in rows]

    # ---- records ---------------------------------------------------------------------------
    def load(self, kind: str) -> list[Any]:
        """Every record of ``kind``, as its record class (KINDS)."""
        model = KINDS[kind]
        rows = self.db.execute("SELECT body FROM records WHERE kind=?", (kind,)).fetchall()
        return [model.model_validate_json(r[0]) for r in rows]

    def load_live_tasks(self) -> list[Task]:
        """The tasks not STOPPED (what the orchestrator holds in memory)."""
        rows = self.db.execute("SELECT body FROM records WHERE kind='task' AND status != 'STOPPED'").fetchall()
        return [Task.model_validate_json(r[0]) for r in rows]

    def write(self, puts: Iterable[tuple[str, BaseModel]], deletes: Iterable[tuple[str, str]] = ()) -> None:
        """Write records and deletions in one transaction."""
        # Tasks in creation order, which is roughly their rows' order in the table: a pass's
        # updates then visit its pages in order instead of at random (status reports arrive by node).
        puts = sorted(puts, key=_write_order)
        rows = [(kind, record_key(kind, obj), obj.model_dump_json(),
                 *(task_columns(obj) if isinstance(obj, Task) else _NO_TASK)) for kind, obj in puts]
        dels = list(deletes)
        if not rows and not dels:
            return
        cur = self.db.cursor()
        cur.execute("BEGIN")
        try:
            cur.executemany(_PUT, rows)
            cur.executemany("DELETE FROM records WHERE kind=? AND key=?", dels)
            cur.execute("COMMIT")
        except BaseException as e:
            if self.db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL does)
                cur.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
                raise StoreUnavailable(f"the store {self.path} cannot take writes: {e} (nothing was written; "
                                       f"free space on its file system, then retry)") from e
            raise

    # ---- stopped tasks (kept here only) -----------------------------------------------------
    def task(self, task_id: str) -> Task | None:
        row = self.db.execute("SELECT body FROM records WHERE kind='task' AND key=?", (task_id,)).fetchone()
        return Task.model_validate_json(row[0]) if row else None

    def stopped_task_ids(self, cluster: str, prefix: str, limit: int | None = None) -> list[str]:
        """Ids of the cluster's STOPPED tasks that start with ``prefix`` (a range of the key)."""
        rows = self.db.execute(
            f"SELECT key FROM records WHERE kind='task' AND key >= ? AND key < ? AND cluster = ? AND {STOPPED}"
            " ORDER BY key LIMIT ?", (prefix, prefix + "\U0010ffff", cluster, -1 if limit is None else limit))
        return [r[0] for r in rows]

    def stopped_tasks(self, cluster: str, service: str | None = None, node: str | None = None,
                      desired: str | None = None, family: str | None = None,
                      after: tuple[float, str] | None = None, limit: int = 500) -> list[Task]:
        """A page of the cluster's STOPPED tasks, by (createdAt, taskId), from after ``after``."""
        sql, args = stopped_page_query("?", cluster, service, node, desired, family, after, limit)
        return [Task.model_validate_json(r[0]) for r in self.db.execute(sql, args).fetchall()]

    def stopped_started_by(self, cluster: str, started_by: str) -> bool:
        """Whether a STOPPED task of the cluster was started by ``started_by``."""
        return self.db.execute(
            f"SELECT 1 FROM records WHERE cluster = ? AND started_by = ? AND {STOPPED} LIMIT 1",
            (cluster, started_by)).fetchone() is not None

    def count_stopped_tasks(self) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM records WHERE {STOPPED}").fetchone()[0]

    def delete_stopped_tasks(self, stopped_before: float) -> int:
        """Delete the STOPPED tasks that stopped before ``stopped_before``; how many."""
        cur = self.db.execute(f"DELETE FROM records WHERE {STOPPED} AND stopped_at < ?", (stopped_before,))
        return cur.rowcount

    # ---- secrets (values arrive and leave encrypted) ----------------------------------------
    def add_secret_version(self, name: str, value: bytes, created_at: float, keep: int) -> int:
        """Store a new version of secret ``name`` (1 for a new name), keeping the newest
        ``keep`` versions; returns the version."""
        cur = self.db.cursor()
        cur.execute("BEGIN")
        try:
            row = cur.execute("SELECT MAX(version) FROM secrets WHERE name=?", (name,)).fetchone()
            version = (row[0] or 0) + 1
            cur.execute("INSERT INTO secrets VALUES (?, ?, ?, ?)", (name, version, value, created_at))
            cur.execute("DELETE FROM secrets WHERE name=? AND version<=?", (name, version - keep))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return version

    def secret_versions(self, name: str | None = None) -> list[tuple[str, int, float]]:
        """(name, version, created_at) of every kept version (of ``name``), by name and version."""
        where, args = ("WHERE name=?", (name,)) if name is not None else ("", ())
        return self.db.execute(f"SELECT name, version, created_at FROM secrets {where} ORDER BY name, version",
                               args).fetchall()

    def secret_value(self, name: str, version: int | None = None) -> tuple[int, bytes] | None:
        """(version, encrypted value) of ``version`` of secret ``name``, or its newest."""
        if version is None:
            row = self.db.execute("SELECT version, value FROM secrets WHERE name=? ORDER BY version DESC LIMIT 1",
                                  (name,)).fetchone()
        else:
            row = self.db.execute("SELECT version, value FROM secrets WHERE name=? AND version=?",
                                  (name, version)).fetchone()
        return (row[0], row[1]) if row else None

    def delete_secret(self, name: str) -> int:
        return self.db.execute("DELETE FROM secrets WHERE name=?", (name,)).rowcount

    def close(self) -> None:
        self.db.close()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def lock_file(path: Path) -> int:
    """Take an exclusive flock on ``path``.lock (held until closed, released by the kernel when the process
    dies); StoreInUse if another process holds it."""
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = ""
        try:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        except OSError:
            pass
        os.close(fd)
        raise StoreInUse(f"the store {path} is in use by another orchestrator{f' (pid {holder})' if holder else ''}; "
                         "one orchestrator per SQLite file (stop the other, or use --store postgresql://... for "
                         "several: docs/high-availability.md)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
