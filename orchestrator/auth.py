"""The API's tokens (the shell around orchestrator.core.auth): the live set in memory, kept in the store.

On the first start with authentication on and no token in the store, an admin token is made and written to
``--admin-token-file`` (mode 0600; the CLI reads the same file by default), so a first user on the same machine
just works; later starts keep the tokens they find.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from orchestrator.core.auth import Role, TokenRecord, new_token
from orchestrator.store import Store


def write_secret_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text + "\n")


class Tokens:
    def __init__(self, store: Store, anonymous_reads: bool = False) -> None:
        self.store = store
        self.anonymous_reads = anonymous_reads
        self.by_id: dict[str, TokenRecord] = {t.id: t for t in store.tokens()}

    def bootstrap(self, *paths: Path) -> Path | None:
        """Without any token: make an admin token and write it to the first of ``paths`` that can be written
        (a daemon's user may have no writable home); returns that path, or None when tokens existed."""
        if self.by_id:
            return None
        errors = []
        for path in paths:
            try:
                token_path = path
                write_secret_file(path, "")  # writable? (before a token exists that nobody could read)
                break
            except OSError as e:
                errors.append(f"{path}: {e.strerror or e}")
        else:
            raise OSError("cannot write the first admin token to " + "; ".join(errors)
                          + " (give a writable --admin-token-file)")
        token, _ = self.create("admin", "bootstrap")
        write_secret_file(token_path, token)
        return token_path

    def create(self, role: Role, name: str) -> tuple[str, TokenRecord]:
        token, rec = new_token(role, name, time.time())
        self.store.put_token(rec)
        self.by_id[rec.id] = rec
        return token, rec

    def revoke(self, token_id: str) -> bool:
        self.by_id.pop(token_id, None)
        return self.store.delete_token(token_id)
