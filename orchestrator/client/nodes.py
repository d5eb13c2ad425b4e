"""``node drain|activate|join|revoke``."""
from __future__ import annotations

import click

from dockyard.dynsec import Credentials
from dockyard.mqtt import write_credentials
from orchestrator.client.session import Session, cluster_option, out, pass_session


@click.group()
def node() -> None:
    """Drain or activate a node; issue or revoke its broker credential."""


@node.command()
@click.argument("node_id", metavar="NODE")
@click.option("-o", "--output", "path", required=True, metavar="FILE",
              help="Write the node's broker credential here (mode 0600); give it to `dockyard agent --mqtt-credentials`.")
@cluster_option
@pass_session
def join(s: Session, node_id: str, path: str) -> None:
    """Issue NODE's broker credential: it may read its own desired document and write its own status and
    presence, nothing else. Issuing it again revokes the previous one (and disconnects that agent)."""
    got = s.api.post(s.api.cpath("nodes", node_id, "credentials"))
    write_credentials(path, Credentials(username=got["username"], password=got["password"]))
    out(f"node/{node_id} credential written to {path} (broker user {got['username']}); start the agent with "
        f"--node-id {node_id} --cluster {s.api.cluster} --mqtt-credentials {path}")


@node.command()
@click.argument("node_id", metavar="NODE")
@cluster_option
@pass_session
def revoke(s: Session, node_id: str) -> None:
    """Revoke NODE's broker credential: the broker disconnects the agent and refuses it from now on."""
    s.api.delete(s.api.cpath("nodes", node_id, "credentials"))
    out(f"node/{node_id} credential revoked")


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
