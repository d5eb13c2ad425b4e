"""A real PostgreSQL 15 (Debian's package) for tests: initdb in a temporary directory, started on a free
loopback port (as the ``postgres`` user when run as root), stopped and removed at the end.

``PgServer.database()`` makes a fresh database per test, so tests never see each other's rows.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

BIN = Path(os.environ.get("DOCKYARD_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PgServer:
    def __init__(self, durable: bool = False) -> None:
        """``durable``: fsync on, as in production, with synchronous_commit off (what the SQLite store's
        WAL + synchronous=NORMAL also gives: a commit does not wait for the disk); else fsync off (tests)."""
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="dockyard-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def missing(self) -> str | None:
        if not (BIN / "initdb").exists():
            return f"PostgreSQL 15 is not installed ({BIN}/initdb); run scripts/bootstrap.sh (apt-get install postgresql)"
        return None

    def start(self) -> PgServer:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(_as_postgres([str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                                     "--locale=C", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, timeout=120)
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server (again, after :meth:`halt`) on its port and data."""
        self.pg_ctl("start", "-w", "-t", "60", "-l", str(self.dir / "log"),
                    "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                          + ("-c synchronous_commit=off" if self.durable else "-c fsync=off"))

    def halt(self) -> None:
        """Stop the server (fast: its sessions are ended), keeping its data for :meth:`resume`."""
        self.pg_ctl("stop", "-m", "fast", "-w", "-t", "60")

    def pg_ctl(self, *args: str, timeout: float = 90) -> None:
        subprocess.run(_as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data), *args]),
                       check=True, capture_output=True, timeout=timeout)

    def stop(self) -> None:
        if self.data.exists():
            try:
                self.pg_ctl("stop", "-m", "immediate", "-w", timeout=60)
            except subprocess.CalledProcessError:
                pass  # not running
        shutil.rmtree(self.dir, ignore_errors=True)

    def database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"
