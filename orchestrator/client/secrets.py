"""``secret create`` (the value from --from-literal, --from-file or stdin; never printed)."""
from __future__ import annotations

import sys

import click

from orchestrator.client.api import unwrap
from orchestrator.client.errors import CliError
from orchestrator.client.session import Session, out, pass_session


@click.group()
def secret() -> None:
    """Manage secrets (list them with: dockyard get secrets; delete: dockyard delete secret NAME)."""


@secret.command("create")
@click.argument("name")
@click.option("--from-literal", "literal", metavar="VALUE", help="The value (visible in your shell history and ps).")
@click.option("--from-file", "path", metavar="PATH|-", help="Read the value from a file, or - for stdin (kept exactly).")
@pass_session
def create(s: Session, name: str, literal: str | None, path: str | None) -> None:
    """Create secret NAME, or add a new version of it if it exists (as `aws secretsmanager
    put-secret-value`). A task gets the newest version when it starts; running tasks keep theirs
    until a new deployment (dockyard rollout restart SERVICE)."""
    if (literal is None) == (path is None):
        raise click.UsageError("give exactly one of --from-literal VALUE or --from-file PATH")
    if literal is not None:
        value = literal
    elif path == "-":
        value = sys.stdin.read()
    else:
        try:
            with open(str(path), encoding="utf-8") as f:
                value = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not value:
        raise CliError("the secret value is empty")
    meta = unwrap(s.api.post("/v1/secrets", {"name": name, "secretString": value}), "secret")
    version = meta.get("version")
    out(f"secret/{name} {'created' if version == 1 else 'updated'} (version {version})")
