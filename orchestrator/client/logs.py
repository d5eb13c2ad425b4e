"""``logs TASK|SERVICE`` and ``exec TASK -- CMD...``: container logs and a command in a task, through the API.

The API relays both to the task's agent over MQTT (docs/cli.md) and streams NDJSON back:
``{"stream", "data"}`` lines, then ``{"end": true, ...}``. ``exec`` exits with the command's exit code. A
service's logs start with their sources (task containers and their prefixes) and carry one log line each,
printed after its source's prefix as ``docker service logs`` does.
"""
from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from typing import Any

import click
import httpx

from orchestrator.client.api import ApiClient
from orchestrator.client.errors import ApiError, CliError, UnreachableError, error_lines
from orchestrator.client.session import Session, cluster_option, pass_session, warn


def ndjson(api: ApiClient, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
           timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """The objects of a streamed NDJSON response; API errors as :class:`ApiError`."""
    params = {k: v for k, v in (params or {}).items() if v is not None and v is not False}
    try:
        with api.client.stream(method, path, params=params or None, json=body,
                               timeout=httpx.Timeout(api.timeout, read=timeout)) as resp:
            if resp.is_error:
                resp.read()
                try:
                    data = resp.json()
                except ValueError:
                    data = None
                raise ApiError(resp.status_code, *error_lines(resp.status_code, data, resp.text))
            for line in resp.iter_lines():
                if line.strip():
                    yield json.loads(line)
    except httpx.ConnectError:
        raise UnreachableError(f"cannot reach the dockyard API at {api.server} (is the orchestrator running?)") from None
    except httpx.TimeoutException:
        raise UnreachableError(f"the dockyard API at {api.server} stopped answering") from None
    except httpx.HTTPError as e:
        raise UnreachableError(f"request to the dockyard API at {api.server} failed: {e or type(e).__name__}") from None


def _ended(item: dict[str, Any]) -> dict[str, Any]:
    """A stream's end marker: warn if the output was cut, raise an error end as CliError."""
    if item.get("truncated"):
        warn("output cut at the response size limit")
    if item.get("code"):
        raise CliError(f"{item.get('error') or item['code']} ({item['code']})")
    return item


def relay_output(items: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """Write the stream's data to stdout/stderr; return its end (an error end raises CliError)."""
    for item in items:
        if item.get("end"):
            return _ended(item)
        stream = sys.stderr if item.get("stream") == "stderr" else sys.stdout
        stream.write(str(item.get("data", "")))
        stream.flush()
    raise CliError("the stream ended before its end marker (the orchestrator stopped?)")


def prefixed(head: dict[str, Any], items: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """A service's lines, each after its source's prefix (padded to the longest); errors as warnings."""
    prefixes = [str(s.get("prefix", "")) for s in head.get("sources", [])]
    width = max((len(p) for p in prefixes), default=0)
    for skipped in head.get("skipped", []):
        warn(str(skipped.get("error")))
    for item in items:
        if item.get("end"):
            return _ended(item)
        i = item.get("source")
        pre = (prefixes[i] if isinstance(i, int) and 0 <= i < len(prefixes) else "?").ljust(width)
        if "error" in item:
            warn(f"{pre.rstrip()}: {item['error']} ({item.get('code')})")
            continue
        data = str(item.get("data", ""))
        stream = sys.stderr if item.get("stream") == "stderr" else sys.stdout
        stream.write(f"{pre} | {data}{'' if data.endswith(chr(10)) else chr(10)}")
        stream.flush()
    raise CliError("the stream ended before its end marker (the orchestrator stopped?)")


@click.command()
@click.argument("name", metavar="TASK|SERVICE")
@click.option("--container", metavar="NAME", help="The container (needed when a task has several).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.option("--tail", type=click.IntRange(min=0), metavar="N", help="Only the last N lines.")
@click.option("--since", metavar="WHEN", help="Only lines since a duration ago (10m, 1h30m), an RFC 3339 time or epoch seconds.")
@click.option("-t", "--timestamps", is_flag=True, help="Prefix each line with its time.")
@cluster_option
@pass_session
def logs(s: Session, name: str, container: str | None, follow: bool, tail: int | None, since: str | None,
         timestamps: bool) -> None:
    """Print a task container's logs, or a service's (every task's lines, each after SERVICE.TASK@NODE;
    --tail is per task). RUNNING tasks, and STOPPED ones until their containers are cleaned up. NAME is a
    full task id, else a service name, else a unique task id prefix."""
    api = s.api
    items = ndjson(api, "GET", api.cpath("logs", name),
                   {"container": container, "follow": follow, "tail": tail, "since": since,
                    "timestamps": timestamps}, timeout=None if follow else 90.0)
    first = next(items, None)
    if first is not None and "sources" in first:
        prefixed(first, items)
    else:
        relay_output(itertools.chain([first] if first is not None else [], items))


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("task")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--container", metavar="NAME", help="The container (needed when the task has several).")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=3600), default=300.0, show_default=True,
              help="Seconds the command may run (its output is cut there).")
@click.option("-i", "--interactive", is_flag=True, hidden=True)
@click.option("-t", "--tty", is_flag=True, hidden=True)
@cluster_option
@pass_session
def exec_(s: Session, task: str, command: tuple[str, ...], container: str | None, timeout: float,
          interactive: bool, tty: bool) -> None:
    """Run COMMAND in a task's container (non-interactive) and exit with its exit code: exec TASK -- CMD ARGS..."""
    if interactive or tty:
        raise click.UsageError("interactive exec (-i/-t) is not supported yet; run a non-interactive command")
    api = s.api
    end = relay_output(ndjson(api, "POST", api.cpath("tasks", task, "exec"),
                              body={"container": container, "command": list(command), "timeout": timeout},
                              timeout=timeout + 60.0))
    code = end.get("exitCode")
    if code is None:
        raise CliError("the command's exit code is unknown")
    click.get_current_context().exit(int(code))
