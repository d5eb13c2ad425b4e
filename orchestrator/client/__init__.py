"""The `dockyard` client: an HTTP client of the orchestrator API and its commands, by noun.

    api.py        ApiClient(server, cluster, transport=...): httpx, paths, error translation
    errors.py     CliError and friends, the one-line error formats, exit codes
    decisions.py  pure: ``run --wait`` exit codes, ``rollout status`` verdicts
    session.py    what a command gets (the client and the clock), shared options and output
    kinds.py      object kinds and their aliases (svc, td, ...)
    manifests.py  apply, delete
    get.py        get, describe
    tasks.py      run, stop
    services.py   scale, rollout
    autoscale.py  autoscale SERVICE --min --max --cpu|--memory|--requests
    nodes.py      node drain|activate
    secrets.py    secret create
    accesskeys.py accesskey create|list|delete (the ECS API's SigV4 keys)
    top.py        top tasks|services|nodes
    events.py     events [-f]
    logs.py       logs, exec (relayed to the task's agent)
    login.py      login (config.py: the CLI config's named contexts)

Everything here imports only click, httpx, PyYAML and the pure modules
:mod:`orchestrator.render` and :mod:`orchestrator.manifest_files`, so the client starts fast
and an agent host needs none of the API server's dependencies. The entry point that hangs
these commands next to the daemons is :mod:`dockyard.cli`.
"""
from __future__ import annotations

import click


def commands() -> list[click.Command]:
    """The client commands, in the order ``dockyard --help`` lists them."""
    from orchestrator.client import (
        accesskeys,
        autoscale,
        events,
        get,
        login,
        logs,
        manifests,
        nodes,
        secrets,
        services,
        tasks,
        tokens,
        top,
    )

    return [manifests.apply, manifests.delete, get.get, get.describe, tasks.run, tasks.stop,
            services.scale, autoscale.autoscale, nodes.node, services.rollout, secrets.secret, accesskeys.accesskey,
            tokens.token, events.events, top.top, logs.logs, logs.exec_, login.login]
