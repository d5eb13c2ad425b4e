"""Issue 16, the store under faults: a full disk (a small tmpfs) and a store file from a newer
schema or corrupt. No agent needed: the store is the orchestrator's alone.

The SQLite tests are about the file (its bytes, its disk): on a PostgreSQL run (DOCKYARD_TEST_STORE=postgresql)
they are skipped, the SQLite run has them; the PostgreSQL counterparts below run there instead (a database of a
newer schema, an unreachable server at start, the server's disk full). A database going away under a running
leader: test_ha.py."""
from __future__ import annotations

import contextlib
import sqlite3
import subprocess

import pytest
from harness import DOCKYARD, on_postgresql
from pgserver import free_port

pytestmark = pytest.mark.slow
sqlite_file = pytest.mark.skipif(on_postgresql(), reason="about the SQLite store file; the SQLite run covers it")
postgresql_only = pytest.mark.skipif(not on_postgresql(), reason="the PostgreSQL counterpart (DOCKYARD_TEST_STORE)")


def taskdef(name: str, pad: int = 0) -> str:
    env = f'environment: [{{name: PAD, value: "{"x" * pad}"}}]' if pad else ""
    return f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: {name}}}
spec:
  containerDefinitions:
    - {{name: main, image: busybox, memory: 16, {env}}}
"""


def start_fails(env, store) -> str:
    """Start an orchestrator on ``store``; it must exit 1 with a clear message (no traceback)."""
    cp = subprocess.run([DOCKYARD, "orchestrator", "--listen", f"127.0.0.1:{env.port}", "--store", str(store),
                         "--mqtt", env.mqtt_url, "--insecure-no-auth"], capture_output=True, text=True, timeout=60)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 1, out
    assert "Traceback" not in out, out
    return out


@sqlite_file
def test_a_corrupt_or_newer_store_is_a_clear_error_at_start(dockyard_env, tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)
    out = start_fails(dockyard_env, corrupt)
    assert "cannot be read" in out and "corrupt or not a dockyard store" in out and str(corrupt) in out
    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema_version', '999')")
    db.commit()
    db.close()
    out = start_fails(dockyard_env, newer)
    assert "schema version 999, newer than this dockyard" in out and "upgrade dockyard" in out


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt) -> None:
    with contextlib.suppress(OSError), open(mnt / "filler", "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()


@sqlite_file
def test_a_full_disk_is_503_nothing_half_written_and_recovers(dockyard_env, small_tmpfs):
    env = dockyard_env
    env.store = small_tmpfs / "dockyard.db"
    env.start_orchestrator()
    env.cli("apply", "-f", str(env.write_manifest(taskdef("before"))))
    fill(small_tmpfs)
    docs = taskdef("full-a", pad=60000) + "---\n" + taskdef("full-b", pad=60000)
    r = env.api.post("/v1/apply", headers=env.api_headers, json={"documents": [
        {"source": f"m.yaml#{i}", "document": d} for i, d in enumerate(__import__("yaml").safe_load_all(docs))]})
    assert r.status_code == 503, r.text
    assert "disk is full" in r.json()["error"] and str(env.store) in r.json()["error"], r.text
    cp = env.cli("apply", "-f", str(env.write_manifest(taskdef("full-c", pad=60000))), check=False)
    assert cp.returncode == 1 and "disk is full" in cp.stdout + cp.stderr and "Traceback" not in cp.stderr, cp
    # Nothing half-written: the file is sound and holds none of the refused multi-document apply.
    db = sqlite3.connect(f"file:{env.store}?mode=ro", uri=True)
    assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    names = {r[0] for r in db.execute("SELECT key FROM records WHERE kind='taskdef'")}
    assert not any(n.startswith(("full-a", "full-b")) for n in names) and any(n.startswith("before") for n in names)
    db.close()
    (small_tmpfs / "filler").unlink()  # space returns
    env.cli("apply", "-f", str(env.write_manifest(taskdef("after"))))
    env.stop_orchestrator(kill=True)  # every 2xx write survives a crash
    env.start_orchestrator()
    names = {t["family"] for t in env.get("/v1/taskdefinitions")["taskDefinitions"]}
    assert {"before", "after"} <= names, names


@postgresql_only
def test_a_newer_or_unreachable_postgresql_store_is_a_clear_error_at_start(dockyard_env):
    import psycopg

    url = dockyard_env.store
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '999')")
    out = start_fails(dockyard_env, url)
    assert "schema version 999, newer than this dockyard" in out and "upgrade dockyard" in out
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    out = start_fails(dockyard_env, nobody)
    assert "cannot be reached" in out and nobody in out, out


@postgresql_only
def test_a_full_postgresql_disk_is_503_nothing_half_written_and_recovers(dockyard_env):
    """The server's disk full (SQLSTATE disk_full, raised by a trigger: filling a real server's disk would crash it
    on its WAL): what the SQLite tmpfs test above asks, on the database."""
    import psycopg

    env = dockyard_env
    env.start_orchestrator()
    env.cli("apply", "-f", str(env.write_manifest(taskdef("before"))))
    with psycopg.connect(env.store, autocommit=True) as db:
        db.execute("CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
                   "'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$")
        db.execute("CREATE TRIGGER full_disk BEFORE INSERT OR UPDATE ON records FOR EACH ROW "
                   "WHEN (NEW.kind = 'taskdef') EXECUTE FUNCTION full_disk()")
        docs = taskdef("full-a") + "---\n" + taskdef("full-b")
        r = env.api.post("/v1/apply", headers=env.api_headers, json={"documents": [
            {"source": f"m.yaml#{i}", "document": d} for i, d in enumerate(__import__("yaml").safe_load_all(docs))]})
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert "No space left on device" in r.json()["error"] and "nothing was written" in r.json()["error"], r.text
        cp = env.cli("apply", "-f", str(env.write_manifest(taskdef("full-c"))), check=False)
        assert cp.returncode == 1 and "nothing was written" in cp.stdout + cp.stderr, cp
        assert "Traceback" not in cp.stderr, cp
        names = {r[0] for r in db.execute("SELECT key FROM records WHERE kind = 'taskdef'")}
        assert not any(n.startswith(("full-a", "full-b")) for n in names) and any(n.startswith("before") for n in names)
        db.execute("DROP TRIGGER full_disk ON records")  # space returns
    env.cli("apply", "-f", str(env.write_manifest(taskdef("after"))))
    env.stop_orchestrator(kill=True)  # every 2xx write survives a crash
    env.start_orchestrator()
    names = {t["family"] for t in env.get("/v1/taskdefinitions")["taskDefinitions"]}
    assert {"before", "after"} <= names, names
