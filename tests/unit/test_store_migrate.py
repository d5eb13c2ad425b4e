"""`dockyard store migrate`: a SQLite store copied into PostgreSQL reads back the same (a real PostgreSQL 15)."""
from __future__ import annotations

from click.testing import CliRunner
from cryptography.fernet import Fernet
from test_store import records

from dockyard.cli import cli
from orchestrator.core.auth import TokenRecord
from orchestrator.models import Task
from orchestrator.secrets import SecretStore
from orchestrator.state import State
from orchestrator.store import Store, open_store
from orchestrator.store_pg import PgStore


def migrate(*args: str):
    return CliRunner().invoke(cli, ["store", "migrate", *args])


def test_a_sqlite_store_migrates_whole_into_an_empty_database(tmp_path, pg_url):
    path = tmp_path / "dockyard.db"
    src = Store(path)
    cluster, td, svc, task, node = records()
    stopped = task.model_copy(update={"taskId": "s" * 32, "lastStatus": "STOPPED", "stoppedAt": 50.0})
    src.write([("cluster", cluster), ("taskdef", td), ("service", svc), ("task", task), ("task", stopped), ("node", node)])
    for _ in range(4):
        src.next_epoch()
    key = Fernet.generate_key()
    SecretStore(src, key).put("db-password", "hunter2", 1.0)
    src.put_token(TokenRecord(id="t1", role="admin", digest="d" * 64, name="ci", createdAt=1.0))
    src.close()

    r = migrate("--from", str(path), "--to", pg_url)
    assert r.exit_code == 0, r.output
    assert "copied 6 records, 1 secret versions" in r.output
    dst = PgStore(pg_url)
    assert dst.load("cluster") == [cluster] and dst.load("service") == [svc] and dst.load("node") == [node]
    assert dst.load_live_tasks() == [task] and dst.task(stopped.taskId) == stopped
    assert [t.taskId for t in dst.stopped_tasks("prod")] == [stopped.taskId]
    assert dst.next_epoch() == 5  # the epoch goes on from the source's: agents keep accepting
    assert SecretStore(dst, key).value("db-password") == (1, "hunter2")
    assert [t.id for t in dst.tokens()] == ["t1"]
    state = State(dst)
    assert isinstance(state.tasks[task.taskId], Task) and len(state.tasks) == 1
    dst.close()

    r = migrate("--from", str(path), "--to", pg_url)
    assert r.exit_code == 1 and "already holds records" in r.output


def test_a_store_in_use_or_a_wrong_target_is_refused(tmp_path, pg_url):
    path = tmp_path / "dockyard.db"
    held = open_store(path)
    try:
        r = migrate("--from", str(path), "--to", pg_url)
        assert r.exit_code == 1 and "in use by another orchestrator" in r.output
    finally:
        held.close()
    r = migrate("--from", str(path), "--to", str(tmp_path / "other.db"))
    assert r.exit_code == 1 and "the target is postgresql://" in r.output
