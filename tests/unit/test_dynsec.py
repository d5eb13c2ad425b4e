"""dockyard.dynsec: what a node's broker role allows, the plugin's password form, and which errors matter."""
from __future__ import annotations

import base64
import hashlib

from dockyard import dynsec


def _send(topic: str) -> dict:
    return {"acltype": "publishClientSend", "topic": topic, "priority": 0, "allow": True}


def test_a_node_role_names_only_its_own_topics():
    acls = dynsec.node_acls("prod", "n1")
    topics = {(a["acltype"], a["topic"]) for a in acls}
    root = "dockyard/v1/prod/nodes/n1"
    reads = {(kind, f"{root}/{leaf}") for leaf in ("desired", "presence", "refusal", "requests")
             for kind in ("subscribeLiteral", "publishClientReceive", "unsubscribeLiteral")}
    assert topics == reads | {("publishClientSend", f"{root}/{leaf}") for leaf in ("status", "presence", "heartbeat")} | {
        ("publishClientSend", f"{root}/responses/#")}
    # The one pattern: a publish under its own responses/ (to the requester's topic there).
    assert all(a["allow"] and "+" not in a["topic"] for a in acls)
    assert [a for a in acls if "#" in a["topic"]] == [_send(f"{root}/responses/#")]
    assert not any(a["acltype"] == "publishClientSend" and a["topic"].endswith("/requests") for a in acls)
    assert not any(a["acltype"] == "publishClientSend" and a["topic"].endswith("/desired") for a in acls)


def test_everything_else_is_denied_by_default_and_only_the_orchestrator_has_control():
    cfg = dynsec.initial_config("pw")
    assert not any(cfg["defaultACLAccess"].values())
    (client,) = cfg["clients"]
    assert client["username"] == dynsec.ORCHESTRATOR_USER and "pw" not in str(client)
    topics = {a["topic"] for a in cfg["roles"][0]["acls"]}
    assert topics == {"dockyard/v1/#", "$CONTROL/dynamic-security/#"}


def test_password_hash_is_the_plugins_pbkdf2_sha512():
    h = dynsec.hashed("secret", salt=b"0123456789ab")
    expect = hashlib.pbkdf2_hmac("sha512", b"secret", b"0123456789ab", 101, 64)
    assert base64.b64decode(h["password"]) == expect and h["iterations"] == 101
    assert dynsec.hashed("secret")["salt"] != dynsec.hashed("secret")["salt"]


def test_join_tolerates_only_the_deletes_of_a_first_join():
    plan = dynsec.join_plan("c", "n", "pw")
    assert [c["command"] for c in plan.commands] == ["deleteClient", "deleteRole", "createRole", "createClient"]
    first = {"responses": [{"command": "deleteClient", "error": "Client not found"},
                           {"command": "deleteRole", "error": "Role not found"},
                           {"command": "createRole"}, {"command": "createClient"}]}
    assert dynsec.failures(plan, first) == []
    bad = {"responses": first["responses"][:3] + [{"command": "createClient", "error": "Client already exists"}]}
    assert dynsec.failures(plan, bad) == ["createClient: Client already exists"]
    assert dynsec.failures(dynsec.revoke_plan("c", "n"), {"responses": [{"command": "deleteClient",
                                                                          "error": "Client not found"}]})


def test_names_must_be_single_topic_levels():
    assert dynsec.invalid_name("node-1.a_b") is None
    for bad in ("", "a/b", "+", "#", "a b", "-x"):
        assert dynsec.invalid_name(bad)


def test_broker_init_of_a_pairs_second_broker_takes_the_first_ones_orchestrator_login(tmp_path):
    import json

    from click.testing import CliRunner

    from dockyard.cli import cli

    def init(*args: str):
        return CliRunner().invoke(cli, ["broker", "init", *args, "--broker-user", "root"])

    assert init(str(tmp_path / "b1")).exit_code == 0
    first = tmp_path / "b1" / "orchestrator-credentials.json"
    r = init(str(tmp_path / "b2"), "--orchestrator-credentials", str(first))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "b2" / "orchestrator-credentials.json").read_text() == first.read_text()
    login = json.loads(first.read_text())
    (client,) = json.loads((tmp_path / "b2" / "dynsec" / "dynamic-security.json").read_text())["clients"]
    assert client["username"] == login["username"]
    assert dynsec.hashed(login["password"], base64.b64decode(client["salt"]))["password"] == client["password"]
    # Not the orchestrator's login (a node's), or no file: refused, nothing made.
    node = tmp_path / "node.json"
    node.write_text(json.dumps({"username": "t-1.n1", "password": "x" * 20}))
    r = init(str(tmp_path / "b3"), "--orchestrator-credentials", str(node))
    assert r.exit_code == 1 and "is not the orchestrator's" in r.output and not (tmp_path / "b3").exists()
    r = init(str(tmp_path / "b4"), "--orchestrator-credentials", str(tmp_path / "missing.json"))
    assert r.exit_code == 1 and "--orchestrator-credentials" in r.output and "cannot read it" in r.output
