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


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``2d`` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use e.g. 90s, 15m, 1h or 2d") from None


@node.group("token")
def node_token() -> None:
    """One-time join tokens: an agent exchanges one for its broker credential (dockyard agent --join)."""


@node_token.command("create")
@click.option("--ttl", default="1h", show_default=True, metavar="DURATION", help="How long it may be used (90s, 15m, 1h, 2d).")
@click.option("--node", "node_id", default=None, metavar="NAME", help="Only this node name may use it.")
@cluster_option
@pass_session
def token_create(s: Session, ttl: str, node_id: str | None) -> None:
    """Print a one-time join token (the store keeps only its hash) and the API certificate's fingerprint."""
    got = s.api.post(s.api.cpath("join-tokens"), {"ttlSeconds": parse_duration(ttl), "nodeId": node_id})
    import time

    out(got["token"])
    out(f"# expires {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(got['expiresAt']))}; works once"
        + (f"; only for node {node_id}" if node_id else ""))
    pin = f" --join-fingerprint {got['fingerprint']}" if got.get("fingerprint") else " --join-ca CA.crt"
    if not got.get("fingerprint"):
        out("# this orchestrator serves no TLS: an agent joins only over https (start it with --tls-cert/--tls-key)")
    else:
        out(f"# the API certificate's fingerprint: {got['fingerprint']}")
    out(f"dockyard agent --join {s.api.server} --token {got['token']}{pin} --cluster {s.api.cluster} "
        f"--node-id {node_id or 'NODE'} --mqtt mqtts://BROKER:8883 --mqtt-ca CA.crt")
