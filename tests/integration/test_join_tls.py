"""Issue 13's join flow and the API's TLS, against a real orchestrator, Mosquitto (the secure broker) and dockerd.

A one-time join token (``dockyard node token create``) is exchanged by ``dockyard agent --join`` over HTTPS, the
orchestrator's certificate verified by its pinned fingerprint or by the CA (``dockyard ca``); the credential is
kept (0600) and reused on restart; a used or expired token is refused with the reason; a CLI trusting another CA
fails; an orchestrator on a non-loopback address without TLS refuses to start."""
from __future__ import annotations

import subprocess
import time

import pytest
from harness import DOCKYARD, free_port, wait_for

pytestmark = pytest.mark.slow


def make_ca(env, name: str = "pki") -> tuple:
    d = env.workdir / name
    subprocess.run([DOCKYARD, "ca", str(d), "--api-name", "127.0.0.1", "--api-name", "localhost"], check=True,
                   capture_output=True, timeout=60)
    return d / "ca.crt", d / "api.crt", d / "api.key"


def token_create(env, *args: str) -> tuple[str, str | None]:
    lines = env.cli("node", "token", "create", *args).stdout.splitlines()
    fp = next((ln.rsplit(" ", 1)[1] for ln in lines if ln.startswith("# the API certificate's fingerprint: ")), None)
    return lines[0], fp


def start_joining(env, node: str, token: str, wait: bool = True, **flags):
    """An agent with no credential of its own: --join and --token only (mqtt_credentials=None keeps the harness
    from issuing one)."""
    return env.start_agent(node, wait=wait, mqtt_credentials=None, join=env.base_url, token=token, **flags)


def refused(env, p, text: str) -> str:
    assert p.popen.wait(timeout=60) == 1
    log = env.tail(p.log)
    assert text in log, log
    return log


def test_a_join_token_works_once_over_verified_https(dockyard_env):
    env = dockyard_env
    ca, cert, key = make_ca(env)
    env.use_tls(ca)
    env.start_orchestrator(tls_cert=cert, tls_key=key)
    assert env.base_url.startswith("https://") and env.get("/healthz")

    # Pinned by the fingerprint printed with the token; bound to node a.
    token, fp = token_create(env, "--node", "a")
    assert token.startswith("dyj_") and fp and fp.startswith("sha256:")
    start_joining(env, "a", token, join_fingerprint=fp)
    kept = env.workdir / "agent-state-a" / "broker-credentials.json"
    assert oct(kept.stat().st_mode & 0o777) == "0o600" and "dockyard-node/" in kept.read_text()

    # Restarted, it reuses the kept credential (the token, used, would be refused now).
    env.stop_agent("a")
    env.wait_for(lambda: not env.node("a")["connected"], timeout=30, message="a disconnected")
    start_joining(env, "a", token, join_fingerprint=fp)

    # The same token again, from another state directory: refused, with the reason.
    p = start_joining(env, "a2", token, wait=False, join_fingerprint=fp)
    refused(env, p, "used already")
    # A token for another node, and an expired one.
    other, _ = token_create(env, "--node", "x")
    refused(env, start_joining(env, "y", other, wait=False, join_ca=ca), "is for node 'x'")
    short, _ = token_create(env, "--ttl", "1s")
    time.sleep(1.5)  # the expiry is the point here
    refused(env, start_joining(env, "z", short, wait=False, join_ca=ca), "expired")
    # A wrong pin: the token is not even sent.
    fresh, _ = token_create(env)
    refused(env, start_joining(env, "w", fresh, wait=False, join_fingerprint="sha256:" + "0" * 64),
            "not the pinned")
    # Verified against the CA instead: the unused token still works.
    start_joining(env, "b", fresh, join_ca=ca)
    assert {n["nodeId"] for n in env.nodes() if n["connected"]} == {"a", "b"}

    # A CLI that trusts another CA refuses the API, and says what to do.
    other_ca, _, _ = make_ca(env, "other-pki")
    cp = subprocess.run([DOCKYARD, "--server", env.base_url, "--ca", str(other_ca), "get", "nodes"],
                        capture_output=True, text=True, timeout=60, env=env.cli_env())
    assert cp.returncode == 1 and "does not trust" in cp.stderr and "--ca" in cp.stderr, cp.stderr
    # `dockyard login` keeps server, CA and token as a context (0600); a bare `dockyard get nodes` then uses it.
    import os

    cfg = env.workdir / "cli-config.yaml"
    bare = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")} | {"DOCKYARD_CONFIG": str(cfg)}
    cp = subprocess.run([DOCKYARD, "login", env.base_url, "--token", env.token, "--ca", str(ca), "--context", "t"],
                        capture_output=True, text=True, timeout=60, env=bare)
    assert cp.returncode == 0, cp.stderr
    assert oct(cfg.stat().st_mode & 0o777) == "0o600" and "current-context: t" in cfg.read_text()
    cp = subprocess.run([DOCKYARD, "-c", env.cluster, "get", "nodes"], capture_output=True, text=True, timeout=60,
                        env=bare)
    assert cp.returncode == 0 and [ln.split()[0] for ln in cp.stdout.splitlines()[1:]] == ["a", "b"], cp.stdout + cp.stderr
    cp = subprocess.run([DOCKYARD, "--context", "nope", "get", "nodes"], capture_output=True, text=True, timeout=60,
                        env=bare)
    assert cp.returncode == 1 and "no such context" in cp.stderr
    # Plain http to the TLS port gets nowhere.
    cp = subprocess.run([DOCKYARD, "--server", f"http://127.0.0.1:{env.port}", "get", "nodes"],
                        capture_output=True, text=True, timeout=60, env=env.cli_env())
    assert cp.returncode != 0


def test_an_orchestrator_beyond_loopback_needs_tls_or_insecure(dockyard_env, tmp_path):
    env = dockyard_env
    port = free_port("0.0.0.0")
    argv = [DOCKYARD, "orchestrator", "--listen", f"0.0.0.0:{port}", "--store", str(tmp_path / "s.db"),
            "--mqtt", env.mqtt_url, "--admin-token-file", str(tmp_path / "t")]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 1 and "without TLS" in cp.stdout + cp.stderr and "--insecure" in cp.stdout + cp.stderr
    assert not (tmp_path / "s.db").exists()  # refused before anything was made
    # --insecure: it starts, and says so loudly.
    log = open(tmp_path / "o.log", "wb")
    p = subprocess.Popen(argv + ["--insecure"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "--insecure: THE API LISTENS BEYOND LOOPBACK WITHOUT TLS" in (tmp_path / "o.log").read_text(),
                 timeout=30, message="the loud warning")
        assert p.poll() is None
    finally:
        p.terminate()
        p.wait(timeout=15)
        log.close()
