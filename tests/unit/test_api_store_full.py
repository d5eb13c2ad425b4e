"""Issue 16: a full disk under the store is HTTP 503 with a clear message (not a 500 with a stack)."""
from __future__ import annotations

from fastapi.testclient import TestClient

from orchestrator.api import create_app
from orchestrator.controller import Controller
from orchestrator.ops import Ops
from orchestrator.state import State
from orchestrator.store import Store, open_store

DOC = {"apiVersion": "dockyard/v1", "kind": "TaskDefinition", "metadata": {"name": "web"},
       "spec": {"containerDefinitions": [{"name": "web", "image": "busybox", "memory": 32,
                                          "environment": [{"name": "PAD", "value": "x" * 20000}]}]}}


def test_apply_on_a_full_store_is_503_and_succeeds_once_space_returns(tmp_path):
    store = Store(tmp_path / "s.db")
    state = State(store)
    ctl = Controller(state, epoch=1, publish=None, clock=lambda: 1000.0)  # type: ignore[arg-type]
    tc = TestClient(create_app(Ops(state, ctl)), raise_server_exceptions=False)
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count={pages}")
    r = tc.post("/v1/apply", json={"documents": [{"source": "a.yaml#1", "document": DOC}]})
    assert r.status_code == 503, r.text
    body = r.json()
    assert "disk is full" in body["error"] and "nothing was written" in body["error"] and body["hint"]
    assert r.headers["retry-after"] == "5"
    store.db.execute(f"PRAGMA max_page_count={pages * 1000}")
    r = tc.post("/v1/apply", json={"documents": [{"source": "a.yaml#1", "document": DOC}]})
    assert r.status_code == 200, r.text
    assert store.db.execute("SELECT count(*) FROM records WHERE kind='taskdef'").fetchone()[0] == 1


def test_a_full_disk_under_postgresql_is_the_same_503_and_succeeds_once_space_returns(pg_url):
    """PostgreSQL's disk_full (SQLSTATE 53100, what a server whose disk filled answers a write) is raised here by
    a trigger: the same 503 and wording as SQLite's full file, the transaction rolled back whole."""
    import psycopg

    store = open_store(pg_url)
    state = State(store)
    ctl = Controller(state, epoch=1, publish=None, clock=lambda: 1000.0)  # type: ignore[arg-type]
    tc = TestClient(create_app(Ops(state, ctl)), raise_server_exceptions=False)
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
                   "'could not extend file \"base/1/2\": No space left on device' USING ERRCODE = 'disk_full'; END $$")
        db.execute("CREATE TRIGGER full_disk BEFORE INSERT OR UPDATE ON records FOR EACH ROW EXECUTE FUNCTION full_disk()")
        r = tc.post("/v1/apply", json={"documents": [{"source": "a.yaml#1", "document": DOC}]})
        assert r.status_code == 503, r.text
        body = r.json()
        assert "No space left on device" in body["error"] and "nothing was written" in body["error"], body
        assert "free space" in body["error"] and body["hint"] and r.headers["retry-after"] == "5"
        assert db.execute("SELECT count(*) FROM records WHERE kind='taskdef'").fetchone()[0] == 0
        db.execute("DROP TRIGGER full_disk ON records")
        r = tc.post("/v1/apply", json={"documents": [{"source": "a.yaml#1", "document": DOC}]})
        assert r.status_code == 200, r.text
        assert db.execute("SELECT count(*) FROM records WHERE kind='taskdef'").fetchone()[0] == 1
    store.close()
