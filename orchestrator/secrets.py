"""The control plane's secret store: versions of named secrets, Fernet-encrypted at rest.

Values are encrypted with a key kept in a file beside the store (created on first start,
mode 0600, or given by ``--secrets-key-file``) before they reach SQLite, and decrypted only
to be sealed to the node that runs a task (:mod:`dockyard.sealing`). Nothing here returns
a value to the API: :meth:`SecretStore.value` is for the controller only. See docs/secrets.md.
"""
from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel

from dockyard.ecs import SECRET_NAME_RE
from dockyard.keyfile import KeyFileError, load_or_create
from orchestrator.store import Store

VERSIONS_KEPT = 20  # older versions are dropped when a new one is added
_CHECK = b"dockyard secrets key check"


class SecretMeta(BaseModel):
    """What the API shows of a secret: never its value."""

    name: str
    version: int  # the newest (what a task starting now gets)
    versions: list[int]
    createdAt: float
    updatedAt: float


def default_key_path(store_path: Path) -> Path:
    """Beside the store file: ``dockyard.db`` -> ``dockyard.db.secrets-key``."""
    return store_path.with_name(store_path.name + ".secrets-key")


def load_key(path: Path) -> bytes:
    """The Fernet key in ``path``, created (0600) if absent."""
    key, _ = load_or_create(path, Fernet.generate_key)
    try:
        Fernet(key.strip())
    except ValueError:
        raise KeyFileError(f"key file {path} does not hold a Fernet key (44 base64 characters)") from None
    return key.strip()


def check_name(name: str) -> str | None:
    """Why ``name`` is not a valid secret name, or None."""
    if not SECRET_NAME_RE.match(name or ""):
        return "a secret name is 1-512 letters, digits or /_+=.@-"
    return None


class SecretStore:
    def __init__(self, store: Store, key: bytes, key_path: Path | None = None, verify: bool = True) -> None:
        """``verify``: check (and on first use record) that ``key`` is the store's key; False only
        for a key of this process alone (unit tests)."""
        self.store, self.fernet = store, Fernet(key)
        check = store.get_meta("secrets_key_check") if verify else ""
        if check == "":
            pass
        elif check is None:
            store.set_meta("secrets_key_check", self.fernet.encrypt(_CHECK).decode())
        else:
            try:
                self.fernet.decrypt(check.encode())
            except InvalidToken:
                where = f" {key_path}" if key_path else ""
                raise KeyFileError(f"the secrets key{where} is not the one the store {store.path} was written with; "
                                   "give the right one with --secrets-key-file") from None

    def put(self, name: str, value: str, now: float) -> SecretMeta:
        """A new version of ``name`` (version 1 creates it)."""
        self.store.add_secret_version(name, self.fernet.encrypt(value.encode()), now, VERSIONS_KEPT)
        meta = self.meta(name)
        assert meta is not None
        return meta

    def meta(self, name: str) -> SecretMeta | None:
        return next(iter(self._metas(self.store.secret_versions(name))), None)

    def all_meta(self) -> list[SecretMeta]:
        return self._metas(self.store.secret_versions())

    @staticmethod
    def _metas(rows: list[tuple[str, int, float]]) -> list[SecretMeta]:
        out: dict[str, SecretMeta] = {}
        for name, version, created in rows:  # by name, then version
            m = out.get(name)
            if m is None:
                out[name] = SecretMeta(name=name, version=version, versions=[version], createdAt=created,
                                       updatedAt=created)
            else:
                m.version, m.updatedAt = version, created
                m.versions.append(version)
        return list(out.values())

    def latest_versions(self, names: set[str]) -> dict[str, int | None]:
        """The newest version of each name (None: no such secret)."""
        return {n: (m.version if (m := self.meta(n)) else None) for n in names}

    def value(self, name: str, version: int | None = None) -> tuple[int, str] | None:
        """(version, plaintext) of ``version`` (newest if None). For sealing only."""
        row = self.store.secret_value(name, version)
        if row is None:
            return None
        return row[0], self.fernet.decrypt(row[1]).decode()

    def matches(self, name: str, value: str) -> bool:
        """Whether the newest version of ``name`` is ``value`` (apply is idempotent)."""
        cur = self.value(name)
        return cur is not None and cur[1] == value

    def delete(self, name: str) -> SecretMeta | None:
        meta = self.meta(name)
        if meta is not None:
            self.store.delete_secret(name)
        return meta
