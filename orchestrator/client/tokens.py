"""``token create|list|revoke``: the API's bearer tokens (admin only)."""
from __future__ import annotations

import click

from orchestrator.client.session import Session, out, pass_session


@click.group()
def token() -> None:
    """Create, list or revoke API tokens (roles: admin, read-only)."""


@token.command()
@click.option("--role", type=click.Choice(["admin", "read-only"]), default="read-only", show_default=True)
@click.option("--name", default="", help="What the token is for (shown by `token list`).")
@pass_session
def create(s: Session, role: str, name: str) -> None:
    """Create a token and print it (once: only its hash is kept)."""
    got = s.api.post("/v1/tokens", {"role": role, "name": name})
    out(got["token"])


@token.command("list")
@pass_session
def list_(s: Session) -> None:
    """List tokens (ids and roles; never the secrets)."""
    rows = s.api.get("/v1/tokens")["tokens"]
    out("ID            ROLE       NAME")
    for r in rows:
        out(f"{r['id']:<13} {r['role']:<10} {r['name']}")


@token.command()
@click.argument("token_id", metavar="ID")
@pass_session
def revoke(s: Session, token_id: str) -> None:
    """Revoke a token: requests with it are refused (401) from now on."""
    s.api.delete(f"/v1/tokens/{token_id}")
    out(f"token/{token_id} revoked")
