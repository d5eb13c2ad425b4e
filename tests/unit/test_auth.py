"""orchestrator.core.auth: 401 without a valid token, 403 for a role that may not act, open health checks."""
from __future__ import annotations

from orchestrator.core.auth import decide, new_token, parse


def _tokens():
    admin, a = new_token("admin", "ops", 1.0)
    ro, r = new_token("read-only", "grafana", 1.0)
    return admin, ro, {a.id: a, r.id: r}


def test_health_checks_are_open_and_everything_else_needs_a_token():
    _, _, lookup = _tokens()
    assert decide("GET", "/healthz", None, lookup).status == 200
    assert decide("GET", "/readyz", None, lookup).status == 200
    for method, path in (("GET", "/metrics"), ("GET", "/v1/clusters"), ("POST", "/v1/apply")):
        d = decide(method, path, None, lookup)
        assert d.status == 401 and "token" in d.hint.lower() or "TOKEN" in d.hint


def test_roles():
    admin, ro, lookup = _tokens()
    assert decide("POST", "/v1/apply", f"Bearer {admin}", lookup).status == 200
    assert decide("GET", "/metrics", f"Bearer {ro}", lookup).status == 200
    d = decide("POST", "/v1/apply", f"Bearer {ro}", lookup)
    assert d.status == 403 and "admin" in d.hint
    assert decide("DELETE", "/v1/clusters/x/services/web", f"bearer {ro}", lookup).status == 403


def test_wrong_revoked_or_malformed_tokens_are_401():
    admin, _, lookup = _tokens()
    tid = parse(f"Bearer {admin}")[0]
    assert decide("GET", "/v1/clusters", f"Bearer {admin}x", lookup).status == 401
    assert decide("GET", "/v1/clusters", "Bearer nonsense", lookup).status == 401
    assert decide("GET", "/v1/clusters", "Basic dXNlcjpwdw==", lookup).status == 401
    del lookup[tid]
    assert decide("GET", "/v1/clusters", f"Bearer {admin}", lookup).status == 401


def test_anonymous_reads_only_when_allowed():
    _, _, lookup = _tokens()
    assert decide("GET", "/v1/clusters", None, lookup, anonymous_reads=True).status == 200
    assert decide("POST", "/v1/apply", None, lookup, anonymous_reads=True).status == 401
