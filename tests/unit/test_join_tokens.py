"""One-time join tokens (orchestrator.core.join), the API's exposure rule (orchestrator.tls) and the CLI config's
contexts (orchestrator.client.config): pure decisions."""
from __future__ import annotations

import pytest

from orchestrator.client import config
from orchestrator.client.errors import CliError
from orchestrator.core import join
from orchestrator.tls import exposure_refusal


def test_a_join_token_works_once_until_it_expires():
    token, rec = join.new_join_token("prod", None, 3600, now=1000.0)
    tid, secret = join.parse(token)
    assert tid == rec.id and rec.digest == join.digest(secret) and secret not in repr(rec)
    used = join.redeem(rec, secret, "prod", "n1", now=1001.0)
    assert isinstance(used, join.JoinToken) and (used.usedAt, used.usedBy) == (1001.0, "n1")
    again = join.redeem(used, secret, "prod", "n2", now=1002.0)
    assert isinstance(again, join.Refusal) and again.status == 401 and "used already (by node n1" in again.error
    late = join.redeem(rec, secret, "prod", "n1", now=1000.0 + 3600)
    assert isinstance(late, join.Refusal) and "expired" in late.error


def test_a_join_token_is_refused_with_a_wrong_secret_cluster_or_node():
    token, rec = join.new_join_token("prod", "n1", 60, now=0.0)
    _, secret = join.parse(token)
    assert join.redeem(rec, secret + "x", "prod", "n1", 1.0).error == "unknown join token"
    assert join.redeem(None, secret, "prod", "n1", 1.0).status == 401
    assert join.redeem(rec, secret, "dev", "n1", 1.0).status == 403
    wrong_node = join.redeem(rec, secret, "prod", "n2", 1.0)
    assert wrong_node.status == 403 and "--node-id n1" in wrong_node.hint
    assert join.parse("dy_abc_def") is None and join.parse("dyj_abc") is None
    with pytest.raises(ValueError):
        join.new_join_token("prod", None, 30 * 86400, now=0.0)


def test_beyond_loopback_the_api_needs_tls_and_tokens_or_insecure():
    assert exposure_refusal(loopback=True, tls=False, tokens=False, insecure=False) is None
    assert exposure_refusal(loopback=False, tls=True, tokens=True, insecure=False) is None
    assert exposure_refusal(loopback=False, tls=False, tokens=False, insecure=True) is None
    why = exposure_refusal(loopback=False, tls=False, tokens=True, insecure=False)
    assert why and "without TLS" in why and "--insecure" in why
    assert "API tokens" in (exposure_refusal(loopback=False, tls=True, tokens=False, insecure=False) or "")


def test_flags_win_over_the_context_piece_by_piece():
    cfg = config.Config.model_validate({"current-context": "prod", "contexts": {
        "prod": {"server": "https://p:8443", "ca": "/p/ca.crt", "token": "dy_p_x"},
        "dev": {"server": "http://127.0.0.1:8080"}}})
    assert config.resolve(cfg, None, None, None, None) == config.Target("https://p:8443", "dy_p_x", "/p/ca.crt")
    assert config.resolve(cfg, None, "dy_t_y", None, None) == config.Target("https://p:8443", "dy_t_y", "/p/ca.crt")
    assert config.resolve(cfg, None, None, None, "dev") == config.Target("http://127.0.0.1:8080", None, None)
    assert config.resolve(config.Config(), None, None, None, None) == config.Target(None, None, None)
    with pytest.raises(CliError, match="no such context"):
        config.resolve(cfg, None, None, None, "qa")


def test_an_agent_goes_unless_the_node_is_online_from_a_boot_it_does_not_know():
    from agent.claim import keepalive_for, verdict
    from dockyard.wire import Presence

    def p(state: str, boot: str = "b1") -> Presence:
        return Presence(nodeId="n", bootId=boot, state=state)

    assert verdict(None, set()) == "go"
    assert verdict(p("offline"), set()) == "go"
    assert verdict(p("online", "mine"), {"mine"}) == "go"  # our own crashed run
    assert verdict(p("online", "theirs"), {"mine"}) == "wait"
    assert keepalive_for(1) == 10 and keepalive_for(5) == 15
