"""``login``: remember a server, its CA and a token as a named context of the CLI config (mode 0600)."""
from __future__ import annotations

import click

from orchestrator.client import config
from orchestrator.client.api import ApiClient
from orchestrator.client.errors import CliError
from orchestrator.client.session import out


@click.command()
@click.argument("server", metavar="URL")
@click.option("--token", "token_", envvar="DOCKYARD_TOKEN", required=True, metavar="TOKEN",
              help="The API token to keep [env DOCKYARD_TOKEN].")
@click.option("--ca", "ca_file", default=None, metavar="FILE", type=click.Path(exists=True, dir_okay=False),
              help="The CA that signed the server's certificate (default: the system's).")
@click.option("--context", "name", default=None, metavar="NAME", help="The context's name  [default: the server's host].")
def login(server: str, token_: str, ca_file: str | None, name: str | None) -> None:
    """Check SERVER with the token, then keep them as a context of the CLI config and make it the current one."""
    import os
    from urllib.parse import urlsplit

    api = ApiClient(server, "default", token=token_, ca=os.path.abspath(ca_file) if ca_file else None)
    try:
        api.get("/v1/clusters")
    finally:
        api.close()
    path = config.default_path()
    if path is None:
        raise CliError("no home directory for the CLI config: set DOCKYARD_CONFIG to a file")
    cfg = config.load(path)
    name = name or urlsplit(api.server).hostname or "default"
    cfg.contexts[name] = config.Context(server=api.server, ca=api.ca, token=token_)
    cfg.current_context = name
    config.save(path, cfg)
    out(f"logged in to {api.server} as context {name} ({path})")
