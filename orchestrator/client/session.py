"""What every client command is handed, the options they share, and their output helpers.

The root command (:mod:`dockyard.cli`) puts a :class:`Session` on the click context and
connects it to ``--server``/``-c``; tests put their own there first (``CliRunner().invoke(
cli, args, obj=Session(transport=httpx.MockTransport(...), clock=Clock(...)))``).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import httpx

from orchestrator import render
from orchestrator.client.api import ApiClient


@dataclass
class Clock:
    """The time sources the polling commands use (``run --wait``, ``rollout status``) and ages."""

    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    wallclock: Callable[[], float] = time.time


@dataclass
class Session:
    """The API client (made by :meth:`connect` from the global options) and the clock."""

    transport: httpx.BaseTransport | None = None
    clock: Clock = field(default_factory=Clock)
    _api: ApiClient | None = field(default=None, repr=False)

    def connect(self, server: str, cluster: str, token: str | None = None, ca: str | None = None) -> ApiClient:
        self.close()
        self._api = ApiClient(server, cluster, transport=self.transport, token=token, ca=ca)
        return self._api

    @property
    def api(self) -> ApiClient:
        if self._api is None:
            raise RuntimeError("Session.connect() was not called")
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


pass_session = click.make_pass_decorator(Session)


def cluster_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``-c/--cluster`` after the subcommand too (``dockyard get svc -c prod``)."""

    def set_cluster(ctx: click.Context, param: Any, value: str | None) -> None:
        if value:
            ctx.ensure_object(Session).api.cluster = value

    return click.option("-c", "--cluster", "cluster_override", metavar="NAME", expose_value=False,
                        callback=set_cluster, help="Cluster (overrides the global -c).")(f)


def out(text: str = "") -> None:
    click.echo(text)


def warn(text: str) -> None:
    click.echo(f"warning: {text}", err=True)


def print_objects(obj: Any, fmt: str) -> None:
    out(render.to_json(obj) if fmt == "json" else render.to_yaml(obj))
