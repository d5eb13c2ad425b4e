"""``apply`` and ``delete``: manifests read on the client, validated and applied by the server."""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import click

from orchestrator.client.api import seg
from orchestrator.client.errors import CliError
from orchestrator.client.kinds import KIND
from orchestrator.client.session import Session, cluster_option, out, pass_session, warn
from orchestrator.manifest_files import ManifestError, read_manifests

DELETE_VERB = {"service": "deleted", "taskdefinition": "deregistered", "task": "stopping", "node": "deregistered", "cluster": "deleted",
               "targetgroup": "deleted", "loadbalancer": "deleted", "secret": "deleted"}


def load_documents(files: Iterable[str]) -> list[dict[str, Any]]:
    """``{"source": "FILE#N", "document": {...}}`` per document; client-side errors as one CliError."""
    try:
        docs = read_manifests(files, stdin=sys.stdin)
    except ManifestError as e:
        raise CliError(str(e)) from None
    return [d.payload() for d in docs]


def print_results(results: list[dict[str, Any]], dry_run: bool = False) -> None:
    for r in results:
        ref = f"{str(r.get('kind') or 'object').lower()}/{r.get('name')}"
        shown, extra = ref, str(r.get("detail") or "")
        # The server's detail may name the object more precisely: "taskdefinition/web:3",
        # "task/batch (2 started)"; use it as the reference then.
        if extra.startswith(ref.split("/")[0] + "/"):
            shown, _, extra = extra.partition(" ")
        line = f"{shown} {r.get('action') or 'done'}"
        if extra:
            line += f" {extra}" if extra.startswith("(") else f" ({extra})"
        if dry_run:
            line += " (dry run)"
        out(line)
        if r.get("warnings"):
            for w in r["warnings"]:
                warn(f"{ref}: {w}")
        elif r.get("ignoredFields"):
            warn(f"{ref}: ignored unsupported fields: {', '.join(map(str, r['ignoredFields']))}")


@click.command()
@click.option("-f", "--filename", "files", multiple=True, required=True, metavar="FILE|DIR|-",
              help="Manifest file, directory (its *.yaml, *.yml, *.json) or - for stdin. Repeatable.")
@click.option("--dry-run", is_flag=True, help="Validate and show what would change; change nothing.")
@cluster_option
@pass_session
def apply(s: Session, files: tuple[str, ...], dry_run: bool) -> None:
    """Create or update objects from manifests (dockyard/v1 or ECS JSON)."""
    docs = load_documents(files)
    data = s.api.post("/v1/apply", {"documents": docs, "dryRun": dry_run}, cluster=s.api.cluster)
    print_results(data.get("results") or [], dry_run)


@click.command()
@click.argument("kind", type=KIND, required=False)
@click.argument("name", required=False)
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE|DIR|-",
              help="Delete the objects these manifests define. Repeatable.")
@click.option("--force", is_flag=True,
              help="node: delete a connected node too: revoke its broker credential (the broker disconnects it) "
                   "and replace its tasks elsewhere.")
@cluster_option
@pass_session
def delete(s: Session, kind: str | None, name: str | None, files: tuple[str, ...], force: bool) -> None:
    """Delete objects: `delete -f FILE` or `delete KIND NAME`.

    \b
    KIND: service (svc), taskdefinition (td; NAME is family:revision, deregisters it),
          task (stops it), node (deregisters it), cluster, secret (every version).
    """
    api = s.api
    if files:
        if kind or name:
            raise click.UsageError("give either -f FILE or KIND NAME, not both")
        docs = load_documents(files)
        data = api.post("/v1/delete", {"documents": docs}, cluster=api.cluster)
        print_results(data.get("results") or [])
        return
    if not kind or not name:
        raise click.UsageError("give KIND NAME (e.g. delete service web) or -f FILE")
    if kind == "taskdefinition" and ":" not in name:
        raise CliError(f"give the revision to deregister: {name}:REVISION (see: dockyard get td {name})")
    path = {
        "service": lambda: api.cpath("services", name),
        "task": lambda: api.cpath("tasks", name),
        "node": lambda: api.cpath("nodes", name),
        "taskdefinition": lambda: f"/v1/taskdefinitions/{seg(name)}",
        "cluster": lambda: f"/v1/clusters/{seg(name)}",
        "targetgroup": lambda: api.cpath("targetgroups", name),
        "loadbalancer": lambda: api.cpath("loadbalancers", name),
        "secret": lambda: f"/v1/secrets/{seg(name)}",
    }[kind]()
    if force and kind != "node":
        raise click.UsageError("--force applies to nodes only")
    api.delete(path, force="true" if force else None)
    out(f"{kind}/{name} {DELETE_VERB[kind]}")
