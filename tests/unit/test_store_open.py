"""Which store a --store value opens, and one orchestrator per SQLite file (the lock beside it)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator.store import Store, StoreError, StoreInUse, files_base, lock_path, open_store, parse_store, redact


@pytest.mark.parametrize("spec, want", [
    ("dockyard.db", ("sqlite", "dockyard.db")),
    ("/var/lib/dockyard/dockyard.db", ("sqlite", "/var/lib/dockyard/dockyard.db")),
    ("sqlite:///var/lib/d.db", ("sqlite", "/var/lib/d.db")),
    ("postgresql://dockyard@db:5432/dockyard", ("postgresql", "postgresql://dockyard@db:5432/dockyard")),
    ("postgres://u:pw@127.0.0.1/x", ("postgresql", "postgres://u:pw@127.0.0.1/x")),
])
def test_parse_store(spec, want):
    assert parse_store(spec) == want


@pytest.mark.parametrize("spec, hint", [
    ("mysql://u@h/db", "unsupported scheme 'mysql'"),
    ("redis://h:6379", "unsupported scheme 'redis'"),
    ("postgresql://", "give host and database"),
    ("postgresql://db:5432", "give host and database"),
    ("sqlite://", "give the file"),
])
def test_unsupported_or_incomplete_store_urls_are_refused(spec, hint):
    with pytest.raises(StoreError, match=hint):
        parse_store(spec)


def test_a_password_never_shows_in_messages():
    assert redact("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"
    with pytest.raises(StoreError) as e:
        parse_store("mysql://u:secret@h/db")
    assert "secret" not in str(e.value)


def test_postgresql_files_go_to_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKYARD_STORE", str(tmp_path / "d" / "dockyard.db"))
    assert files_base("postgresql://u@db:6000/prod") == tmp_path / "d" / "postgresql-db-6000-prod"
    assert files_base(str(tmp_path / "x.db")) == tmp_path / "x.db"


def test_a_second_exclusive_open_is_refused_until_the_first_closes(tmp_path):
    path = tmp_path / "dockyard.db"
    first = open_store(path)
    with pytest.raises(StoreInUse, match="in use by another orchestrator"):
        open_store(path)
    reader = Store(path)  # not exclusive: a reader (tests, tools) still opens it
    reader.close()
    first.close()
    open_store(path).close()


def test_the_lock_is_released_when_its_process_dies(tmp_path):
    path = tmp_path / "dockyard.db"
    holder = subprocess.Popen([sys.executable, "-c", f"from orchestrator.store import open_store; s = open_store({str(path)!r}); "
                               "print('held', flush=True); import time; time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreInUse, match=f"pid {holder.pid}"):
            open_store(path)
    finally:
        holder.kill()
        holder.wait()
    open_store(path).close()
    assert lock_path(path).exists()


def orchestrator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from dockyard.cli import main; main()", "orchestrator",
                           "--listen", "127.0.0.1:0", "--insecure-no-auth", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_daemon_refuses_a_store_in_use_and_an_unsupported_url(tmp_path):
    path = tmp_path / "dockyard.db"
    held = open_store(path)
    try:
        r = orchestrator("--store", str(path))
    finally:
        held.close()
    assert r.returncode == 1 and "in use by another orchestrator" in r.stderr and "Traceback" not in r.stderr
    r = orchestrator("--store", "mysql://u@h/db")
    assert r.returncode == 1 and "unsupported scheme 'mysql'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "mysql:").exists()
