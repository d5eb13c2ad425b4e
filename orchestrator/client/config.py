"""The CLI's config file with named contexts, as kubeconfig has (``dockyard login`` writes it; mode 0600).

    # $XDG_CONFIG_HOME/dockyard/config.yaml (~/.config/dockyard/config.yaml), or DOCKYARD_CONFIG
    current-context: prod
    contexts:
      prod: {server: "https://orch.example.com:8443", ca: /etc/dockyard/ca.crt, token: "dy_..."}

What a command uses, each piece on its own (:func:`resolve`, pure): the flag (``--server``, ``--token``, ``--ca``),
else the environment (``DOCKYARD_SERVER``, ``DOCKYARD_TOKEN``, ``DOCKYARD_CA``: click reads these into the
flags), else the context (``--context`` / ``DOCKYARD_CONTEXT``, else ``current-context``), else the defaults (the
local server; the token file the orchestrator's first start writes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.client.errors import CliError


class Context(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server: str = Field(min_length=1)
    ca: str | None = None
    token: str | None = None


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    current_context: str | None = Field(default=None, alias="current-context")
    contexts: dict[str, Context] = Field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    server: str | None
    token: str | None
    ca: str | None


def default_path() -> Path | None:
    env = os.environ.get("DOCKYARD_CONFIG")
    if env:
        return Path(env)
    try:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    except RuntimeError:  # no home (a systemd DynamicUser)
        return None
    return base / "dockyard" / "config.yaml"


def load(path: Path | None) -> Config:
    if path is None or not path.exists():
        return Config()
    try:
        return Config.model_validate(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError) as e:
        raise CliError(f"cannot read the CLI config {path}: {e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CliError(f"{path}: {where}: {first['msg']}", "fix it, or run dockyard login again") from None


def save(path: Path, cfg: Config) -> None:
    """Write with mode 0600 from the start (it holds tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg.model_dump(by_alias=True, exclude_none=True), sort_keys=False)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)


def resolve(cfg: Config, server: str | None, token: str | None, ca: str | None, context: str | None) -> Target:
    """Flags (and their environment variables) first, then the context's pieces."""
    name = context or cfg.current_context
    ctx = cfg.contexts.get(name) if name else None
    if context and ctx is None:
        known = ", ".join(sorted(cfg.contexts)) or "none"
        raise CliError(f"--context {context}: no such context (known: {known})",
                       "dockyard login SERVER --context NAME adds one")
    return Target(server or (ctx.server if ctx else None), token or (ctx.token if ctx else None),
                  ca or (ctx.ca if ctx else None))
