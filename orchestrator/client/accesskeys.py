"""``accesskey create|list|delete``: access keys for the ECS API (SigV4; docs/ecs-compat.md)."""
from __future__ import annotations

import click

from orchestrator.client.session import Session, out, pass_session


@click.group()
def accesskey() -> None:
    """Access keys for the ECS API (boto3, the AWS CLI, ecs-deploy sign their requests with one)."""


@accesskey.command("create")
@click.option("--role", type=click.Choice(["admin", "read-only"]), default="admin", show_default=True,
              help="read-only: Describe* and List* only (AccessDeniedException for the rest)")
@pass_session
def create(s: Session, role: str) -> None:
    """Create an access key; its secret is shown once, here (export both for an AWS client)."""
    key = s.api.post("/v1/accesskeys", {"role": role}).get("accessKey") or {}
    out(f"AWS_ACCESS_KEY_ID={key.get('accessKeyId')}\nAWS_SECRET_ACCESS_KEY={key.get('secretAccessKey')}")


@accesskey.command("list")
@pass_session
def list_keys(s: Session) -> None:
    """List access keys (ids and roles)."""
    for k in s.api.get("/v1/accesskeys").get("accessKeys") or []:
        out(f"{k.get('accessKeyId')}\t{k.get('role', 'admin')}")


@accesskey.command("delete")
@click.argument("key_id")
@pass_session
def delete(s: Session, key_id: str) -> None:
    """Delete an access key: requests signed with it are refused from now on."""
    s.api.delete(f"/v1/accesskeys/{key_id}")
    out(f"accesskey/{key_id} deleted")
