"""The daemons' log format flags (click only: the CLI imports this without structlog)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def format_options(f: F) -> F:
    """``--log-format text|json`` and its alias ``--log-json``: the command gets ``log_json: bool`` (``--log-format``
    is read first, eager, and folded into it)."""

    def merge(ctx: click.Context, _param: click.Parameter, flag: bool) -> bool:
        fmt = ctx.params.pop("log_format", None)
        if flag and fmt == "text":
            raise click.UsageError("--log-json contradicts --log-format text")
        return flag or fmt == "json"

    f = click.option("--log-json", "log_json", is_flag=True, callback=merge,
                     help="Alias of --log-format json.")(f)
    return click.option("--log-format", "log_format", type=click.Choice(["text", "json"]), default=None,
                        is_eager=True,
                        help="text: key=value lines for people; json: JSON lines with the bound context.  [default: text]")(f)
