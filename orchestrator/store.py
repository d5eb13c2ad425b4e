"""SQLite (WAL) persistence of the control-plane records.

The store is the source of truth across restarts. The orchestrator keeps the whole state in
memory (:mod:`orchestrator.state`) and writes changed records back here in one transaction
per reconcile pass (or per API call), so a burst of 10,000 placements is one commit, not
10,000.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from orchestrator.models import Cluster, Node, Service, Task, TaskDefinition

SCHEMA_VERSION = 1
KINDS: dict[str, type[BaseModel]] = {
    "cluster": Cluster,
    "taskdef": TaskDefinition,
    "service": Service,
    "task": Task,
    "node": Node,
}


def default_store_path() -> Path:
    """$DOCKYARD_STORE, else $XDG_DATA_HOME/dockyard/dockyard.db (~/.local/share/dockyard/dockyard.db)."""
    if os.environ.get("DOCKYARD_STORE"):
        return Path(os.environ["DOCKYARD_STORE"])
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "dockyard" / "dockyard.db"


def record_key(kind: str, obj: BaseModel) -> str:
    if isinstance(obj, Cluster):
        return obj.clusterName
    if isinstance(obj, TaskDefinition):
        return obj.ref
    if isinstance(obj, Service):
        return f"{obj.cluster}/{obj.serviceName}"
    if isinstance(obj, Task):
        return obj.taskId
    if isinstance(obj, Node):
        return f"{obj.cluster}/{obj.nodeId}"
    raise TypeError(f"not a record: {kind}")


class StoreError(RuntimeError):
    pass


class Store:
    """Records as JSON rows, one table; a meta table holds the schema version and the epoch."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
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

    # ---- meta ------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def next_epoch(self) -> int:
        """Increment and return the orchestrator incarnation (the fencing token on the bus)."""
        epoch = int(self.get_meta("epoch", "0") or 0) + 1
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (str(epoch),))
        return epoch

    # ---- records ---------------------------------------------------------------------------
    def load(self, kind: str) -> list[BaseModel]:
        model = KINDS[kind]
        rows = self.db.execute("SELECT body FROM records WHERE kind=?", (kind,)).fetchall()
        return [model.model_validate_json(r[0]) for r in rows]

    def write(self, puts: Iterable[tuple[str, BaseModel]], deletes: Iterable[tuple[str, str]] = ()) -> None:
        """Write records and deletions in one transaction."""
        rows = [(kind, record_key(kind, obj), obj.model_dump_json()) for kind, obj in puts]
        dels = list(deletes)
        if not rows and not dels:
            return
        cur = self.db.cursor()
        cur.execute("BEGIN")
        try:
            cur.executemany("INSERT OR REPLACE INTO records (kind, key, body) VALUES (?, ?, ?)", rows)
            cur.executemany("DELETE FROM records WHERE kind=? AND key=?", dels)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()
