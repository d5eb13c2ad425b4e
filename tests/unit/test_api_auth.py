"""The API with tokens on (orchestrator.api + orchestrator.auth, no server): 401/403 as JSON with a hint, token
management for admins only, node credentials refused with a hint when the orchestrator manages no broker clients."""
from __future__ import annotations

from fastapi.testclient import TestClient

from orchestrator.api import create_app
from orchestrator.auth import Tokens
from orchestrator.controller import Controller
from orchestrator.ops import Ops
from orchestrator.state import State
from orchestrator.store import open_store


def _app(tmp_path, store_at: str | None = None):
    store = open_store(store_at or str(tmp_path / "s.db"), exclusive=False)
    state = State(store)
    ctl = Controller(state, epoch=1, publish=None, clock=lambda: 1000.0)  # type: ignore[arg-type]
    tokens = Tokens(store)
    (tmp_path / "not-a-dir").write_text("")
    # An unwritable first choice (a service user's home) falls back to the next path.
    assert tokens.bootstrap(tmp_path / "not-a-dir" / "token", tmp_path / "token") == tmp_path / "token"
    assert tokens.bootstrap(tmp_path / "again") is None
    admin = (tmp_path / "token").read_text().strip()
    assert oct((tmp_path / "token").stat().st_mode & 0o777) == "0o600"
    return TestClient(create_app(Ops(state, ctl), tokens=tokens)), admin, store


def test_tokens_roles_and_revocation(tmp_path, store_at):
    tc, admin, store = _app(tmp_path, store_at)  # SQLite and PostgreSQL
    r = tc.get("/v1/clusters")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and r.json()["hint"]
    auth = {"Authorization": f"Bearer {admin}"}
    assert tc.get("/v1/clusters", headers=auth).status_code == 200
    ro = tc.post("/v1/tokens", json={"role": "read-only", "name": "ci"}, headers=auth).json()
    ro_auth = {"Authorization": f"Bearer {ro['token']}"}
    assert tc.get("/v1/clusters", headers=ro_auth).status_code == 200
    assert tc.post("/v1/tokens", json={"role": "admin"}, headers=ro_auth).status_code == 403
    assert tc.get("/v1/tokens", headers=ro_auth).status_code == 403
    meta = " ".join(row[0] for row in store.db.execute("SELECT value FROM meta").fetchall())
    assert ro["name"] == "ci" and '"ci"' in meta and ro["token"] not in meta  # stored, hashed
    assert tc.delete(f"/v1/tokens/{ro['id']}", headers=auth).status_code == 200
    assert tc.get("/v1/clusters", headers=ro_auth).status_code == 401
    assert tc.delete(f"/v1/tokens/{ro['id']}", headers=auth).status_code == 404
    # A restarted orchestrator finds the same tokens in the store.
    assert set(Tokens(store).by_id) == {t.id for t in store.tokens()}


def test_node_credentials_need_a_broker_admin_and_topic_safe_names(tmp_path):
    tc, admin, _ = _app(tmp_path)
    auth = {"Authorization": f"Bearer {admin}"}
    r = tc.post("/v1/clusters/prod/nodes/n1/credentials", headers=auth)
    assert r.status_code == 409 and "--mqtt-credentials" in r.json()["hint"]
    r = tc.post("/v1/clusters/prod/nodes/n+1/credentials", headers=auth)
    assert r.status_code == 400 and r.json()["field"] == "node"
