"""Issue 16: a full disk under the store is HTTP 503 with a clear message (not a 500 with a stack)."""
from __future__ import annotations

from fastapi.testclient import TestClient

from orchestrator.api import create_app
from orchestrator.controller import Controller
from orchestrator.ops import Ops
from orchestrator.state import State
from orchestrator.store import Store

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
