"""``node drain|activate``."""
from __future__ import annotations

import click

from orchestrator.client.session import Session, cluster_option, out, pass_session


@click.group()
def node() -> None:
    """Drain or activate a node."""


@node.command()
@click.argument("node_id", metavar="NODE")
@cluster_option
@pass_session
def drain(s: Session, node_id: str) -> None:
    """Set a node DRAINING: no new tasks; service tasks move elsewhere."""
    s.api.post(s.api.cpath("nodes", node_id, "drain"))
    out(f"node/{node_id} draining")


@node.command()
@click.argument("node_id", metavar="NODE")
@cluster_option
@pass_session
def activate(s: Session, node_id: str) -> None:
    """Set a node ACTIVE again."""
    s.api.post(s.api.cpath("nodes", node_id, "activate"))
    out(f"node/{node_id} activated")
