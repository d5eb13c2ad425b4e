"""The `dockyard` command line: an HTTP client of the orchestrator API, plus the two daemons.

    dockyard apply -f manifests/          # kubectl-style client commands (httpx, JSON API)
    dockyard get services -o wide
    dockyard orchestrator                 # the control-plane daemon (imported lazily)
    dockyard agent ...                    # the per-host agent (imported lazily)

Client commands import only click, httpx, PyYAML and the pure modules
:mod:`orchestrator.render` and :mod:`orchestrator.manifest_files`, so they start fast and
an agent host needs none of the API server's dependencies.

Every error is one line on stderr starting ``error:`` and exit status 1 (usage errors: 2,
Ctrl-C: 130); a Python traceback only with DOCKYARD_DEBUG=1.
"""
from __future__ import annotations

import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import quote

import click
import httpx

from dockyard import __version__
from orchestrator import render
from orchestrator.manifest_files import ManifestError, read_manifests

DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_CLUSTER = "default"
TIMEOUT = 30.0
RUN_POLL_SECONDS = 0.2
ROLLOUT_POLL_SECONDS = 0.5

# Seams for unit tests: an httpx transport (httpx.MockTransport) and the clock.
TRANSPORT: httpx.BaseTransport | None = None
sleep: Callable[[float], None] = time.sleep
monotonic: Callable[[], float] = time.monotonic
wallclock: Callable[[], float] = time.time


# ---- errors -------------------------------------------------------------------------------
class CliError(click.ClickException):
    """A user-facing failure: each line printed as ``error: LINE`` on stderr, exit 1."""

    exit_code = 1

    def __init__(self, *lines: str) -> None:
        self.lines = [str(line) for line in lines] or ["failed"]
        super().__init__(self.lines[0])

    def show(self, file: Any = None) -> None:
        for line in self.lines:
            click.echo(f"error: {line}", err=True)


class UnreachableError(CliError):
    """The API could not be reached (connection refused, DNS, timeout): may be transient."""


class ApiError(CliError):
    def __init__(self, status: int, *lines: str) -> None:
        self.status = status
        super().__init__(*lines)


def format_api_error(item: dict[str, Any]) -> str:
    """``{"error", "field", "hint"}`` -> ``field: error (hint: hint)``."""
    msg = str(item.get("error") or item.get("message") or "request failed")
    if item.get("field") and not msg.startswith(f"{item['field']}:"):
        msg = f"{item['field']}: {msg}"
    if item.get("hint"):
        msg += f" (hint: {item['hint']})"
    return msg


def format_document_error(item: dict[str, Any]) -> str:
    """An apply/delete error: ``FILE (doc N, kind K name X): field.path: message (hint: ...)``."""
    source = str(item.get("source") or "")
    path, sep, index = source.rpartition("#")
    if not sep or not index.isdigit():
        path, index = source, ""
    where = []
    if index:
        where.append(f"doc {index}")
    kind_name = " ".join(f"{k} {item[k]}" for k in ("kind", "name") if item.get(k))
    if kind_name:
        where.append(kind_name)
    head = path or "<manifest>"
    if where:
        head += f" ({', '.join(where)})"
    msg = str(item.get("message") or item.get("error") or "invalid")
    if item.get("field"):
        msg = f"{item['field']}: {msg}"
    if item.get("hint"):
        msg += f" (hint: {item['hint']})"
    return f"{head}: {msg}"


def error_lines(status: int, data: Any, text: str) -> list[str]:
    """The message lines of an error response (dockyard's shape; FastAPI's ``detail`` too)."""
    if isinstance(data, dict):
        errs = data.get("errors")
        if isinstance(errs, list) and errs:
            return [format_document_error(e) if isinstance(e, dict) else str(e) for e in errs]
        if data.get("error"):
            return [format_api_error(data)]
        detail = data.get("detail")
        if isinstance(detail, str):
            return [detail]
        if isinstance(detail, list) and detail:
            out = []
            for d in detail:
                if isinstance(d, dict):
                    loc = ".".join(str(x) for x in d.get("loc") or [] if x != "body")
                    out.append(f"{loc}: {d.get('msg')}" if loc else str(d.get("msg")))
                else:
                    out.append(str(d))
            return out
    snippet = " ".join((text or "").split())[:200]
    return [f"the API answered HTTP {status}" + (f": {snippet}" if snippet else "")]


# ---- API client ---------------------------------------------------------------------------
def normalise_server(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def seg(value: Any) -> str:
    return quote(str(value), safe=":")


def unwrap(data: Any, key: str) -> dict[str, Any]:
    """Object responses may be ``{"service": {...}}`` or the bare object; accept both."""
    if isinstance(data, dict) and isinstance(data.get(key), dict):
        return data[key]
    return data if isinstance(data, dict) else {}


class Api:
    def __init__(self, server: str, cluster: str) -> None:
        self.server = normalise_server(server)
        self.cluster = cluster
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.server,
                timeout=TIMEOUT,
                transport=TRANSPORT,
                headers={"User-Agent": f"dockyard-cli/{__version__}", "Accept": "application/json"},
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def cpath(self, *parts: Any) -> str:
        """``/v1/clusters/<cluster>/<parts...>``."""
        return "/".join(["/v1/clusters", seg(self.cluster), *(seg(p) for p in parts)])

    def request(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self.client.request(method, path, params=params or None, json=body)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            raise CliError(f"invalid server URL {self.server!r}: {e} (use e.g. --server http://127.0.0.1:8080)") from None
        except httpx.ConnectError:
            raise UnreachableError(
                f"cannot reach the dockyard API at {self.server} "
                "(is the orchestrator running? start it with: dockyard orchestrator)"
            ) from None
        except httpx.TimeoutException:
            raise UnreachableError(f"the dockyard API at {self.server} did not answer within {TIMEOUT:g} s") from None
        except httpx.HTTPError as e:
            raise UnreachableError(f"request to the dockyard API at {self.server} failed: {e or type(e).__name__}") from None
        try:
            data = resp.json() if resp.content else {}
        except ValueError:
            data = None
        if resp.is_error:
            raise ApiError(resp.status_code, *error_lines(resp.status_code, data, resp.text))
        if data is None:
            raise CliError(f"the API at {self.server} answered {method} {path} with something that is not JSON")
        return data

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, params=params, body=body if body is not None else {})

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=params)


# ---- kinds --------------------------------------------------------------------------------
KIND_ALIASES = {
    "service": "service", "services": "service", "svc": "service",
    "taskdefinition": "taskdefinition", "taskdefinitions": "taskdefinition", "td": "taskdefinition",
    "task-definition": "taskdefinition", "task-definitions": "taskdefinition", "taskdef": "taskdefinition",
    "task": "task", "tasks": "task",
    "node": "node", "nodes": "node",
    "cluster": "cluster", "clusters": "cluster",
}
PLURAL = {"service": "services", "taskdefinition": "taskdefinitions", "task": "tasks", "node": "nodes", "cluster": "clusters"}


class KindType(click.ParamType):
    name = "KIND"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        kind = KIND_ALIASES.get(str(value).lower())
        if kind is None:
            self.fail(f"unknown kind {value!r}; use one of: clusters, taskdefinitions (td), services (svc), tasks, nodes", param, ctx)
        return kind


KIND = KindType()


def name_of(kind: str, obj: dict[str, Any]) -> str:
    if kind == "service":
        return str(obj.get("serviceName"))
    if kind == "taskdefinition":
        return f"{obj.get('family')}:{obj.get('revision')}"
    if kind == "task":
        return str(obj.get("taskId"))
    if kind == "node":
        return str(obj.get("nodeId"))
    return str(obj.get("clusterName"))


def matches(kind: str, obj: dict[str, Any], name: str) -> bool:
    if kind == "taskdefinition" and ":" not in name:
        return obj.get("family") == name
    if kind == "task":
        return str(obj.get("taskId", "")).startswith(name)
    return name_of(kind, obj) == name


# ---- pure decision logic (unit tested) ----------------------------------------------------
def task_exit_status(task: dict[str, Any], essential: set[str] | None) -> tuple[int, str]:
    """Exit code and one-line summary of a STOPPED task, as ``docker run`` would report it.

    The code is that of the first essential container (task-definition order) that has an
    exit code; ``essential=None`` (task definition unknown) treats every container as
    essential. A task that stopped without any exit code (TaskFailedToStart, lost node...)
    exits 1 and the summary carries the stoppedReason.
    """
    tid = render.short_id(task.get("taskId"))
    why = ": ".join(str(x) for x in (task.get("stopCode"), task.get("stoppedReason")) if x)
    for c in task.get("containers") or []:
        if essential is not None and c.get("name") not in essential:
            continue
        code = c.get("exitCode")
        if code is None:
            continue
        try:
            code = int(code)
        except (TypeError, ValueError):
            continue
        text = f"task {tid} stopped: container {c.get('name')} exited with code {code}"
        if c.get("reason"):
            text += f" ({c['reason']})"
        if why:
            text += f" [{why}]"
        return (code if 0 <= code <= 255 else 1), text
    return 1, f"task {tid} stopped without an exit code: {why or 'no reason given'}"


def run_exit_code(tasks: list[dict[str, Any]], essential: set[str] | None) -> tuple[int, list[str]]:
    """Exit code of ``run --wait``: the first non-zero task exit code (task order), else 0."""
    code, lines = 0, []
    for t in tasks:
        c, line = task_exit_status(t, essential)
        lines.append(line)
        if code == 0 and c != 0:
            code = c
    return code, lines


def essential_containers(taskdef: dict[str, Any]) -> set[str] | None:
    spec = taskdef.get("spec") or taskdef
    defs = spec.get("containerDefinitions")
    if not defs:
        return None
    return {str(c.get("name")) for c in defs if c.get("essential", True)}


@dataclass
class RolloutVerdict:
    state: str  # "progress" | "complete" | "failed"
    tracked: str | None  # id of the deployment being followed
    message: str


def rollout_verdict(service: dict[str, Any], initial_ids: set[str], tracked: str | None,
                    now: float | None = None) -> RolloutVerdict:
    """Decide ``rollout status`` from one snapshot of the service.

    ``initial_ids``: ids of the deployments that existed when the command started;
    ``tracked``: the deployment followed so far (None on the first call). Failed when the
    followed deployment turned FAILED, or when a rollback deployment appeared that was not
    there at the start (the circuit breaker rolled back: the PRIMARY is then the rollback).
    A new non-rollback PRIMARY (someone applied again) is followed instead.
    """
    name = service.get("serviceName")
    now = time.time() if now is None else now
    deps = [d for d in service.get("deployments") or [] if isinstance(d, dict)]
    by_id = {d.get("id"): d for d in deps}
    if service.get("status") in ("DRAINING", "INACTIVE"):
        return RolloutVerdict("failed", tracked, f"service {name} is being deleted (status {service.get('status')})")
    if tracked and tracked in by_id and by_id[tracked].get("rolloutState") == "FAILED":
        d = by_id[tracked]
        return RolloutVerdict("failed", tracked, f"deployment {tracked} ({d.get('taskDefinition')}) failed: {d.get('rolloutStateReason') or 'no reason given'}")
    for d in deps:
        if d.get("isRollback") and d.get("id") not in initial_ids:
            old = by_id.get(tracked) or {}
            reason = old.get("rolloutStateReason") or d.get("rolloutStateReason") or "circuit breaker triggered"
            what = f"deployment {tracked} ({old.get('taskDefinition')})" if tracked else "the deployment"
            return RolloutVerdict("failed", tracked, f"{what} failed and was rolled back to {d.get('taskDefinition')}: {reason}")
    primary = next((d for d in deps if d.get("status") == "PRIMARY"), None)
    gen, observed = service.get("generation"), service.get("observedGeneration")
    if isinstance(gen, int) and isinstance(observed, int) and observed < gen:
        return RolloutVerdict("progress", tracked, f"waiting for the service controller to observe generation {gen} (observed {observed})")
    if primary is None:
        return RolloutVerdict("progress", tracked, f"waiting for a deployment of service {name}")
    tracked = primary.get("id")
    state = primary.get("rolloutState")
    counts = (
        f"{primary.get('runningCount', 0)}/{primary.get('desiredCount', 0)} running, "
        f"{primary.get('pendingCount', 0)} pending, {primary.get('failedTasks', 0)} failed"
    )
    if state == "FAILED":
        return RolloutVerdict("failed", tracked, f"deployment {tracked} ({primary.get('taskDefinition')}) failed: {primary.get('rolloutStateReason') or 'no reason given'}")
    if state == "COMPLETED":
        return RolloutVerdict("complete", tracked, f"service {name} successfully rolled out {primary.get('taskDefinition')} ({counts})")
    others = [d for d in deps if d is not primary and d.get("status") != "INACTIVE" and (d.get("runningCount") or 0) > 0]
    old = f"; {sum(d.get('runningCount') or 0 for d in others)} old task(s) running" if others else ""
    head = f"deployment {tracked} ({primary.get('taskDefinition')})"
    bake_ends = primary.get("bakeEndsAt")
    if isinstance(bake_ends, (int, float)):  # every task proven: the bake decides COMPLETED or rollback
        left = max(0, math.ceil(bake_ends - now))
        return RolloutVerdict("progress", tracked, f"{head} baking: all {primary.get('provenCount', 0)} tasks proven "
                              f"healthy, completes in {left}s unless a task fails ({primary.get('failedTasks', 0)} failed){old}")
    dc = (service.get("spec") or {}).get("deploymentConfiguration") or {}
    proof = dc.get("minimumHealthyTimeSeconds")
    proven = (f", {primary.get('provenCount', 0)}/{primary.get('desiredCount', 0)} proven healthy ({proof}s each)"
              if proof is not None else "")
    return RolloutVerdict("progress", tracked, f"{head} {state or 'IN_PROGRESS'}: {counts}{proven}{old}")


# ---- click plumbing -----------------------------------------------------------------------
CLIENT_COMMANDS = ["apply", "delete", "get", "describe", "run", "stop", "scale", "node", "rollout"]
DAEMON_COMMANDS = ["orchestrator", "agent"]


class RootGroup(click.Group):
    """Lists commands in sections, and owns error handling and exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        order = CLIENT_COMMANDS + DAEMON_COMMANDS
        return sorted(self.commands, key=lambda n: order.index(n) if n in order else len(order))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for title, names in (("Client commands", CLIENT_COMMANDS), ("Daemons", DAEMON_COMMANDS)):
            rows = []
            for n in names:
                cmd = self.commands.get(n)
                if cmd is not None and not cmd.hidden:
                    rows.append((n, cmd.get_short_help_str(limit=200)))
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name or "dockyard", complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:  # click turns KeyboardInterrupt into Abort
            click.echo("", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(130)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except BrokenPipeError:
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            sys.exit(141)
        except Exception as e:  # a bug: one line, the traceback only on request
            if os.environ.get("DOCKYARD_DEBUG"):
                traceback.print_exc()
            click.echo(f"error: internal error: {type(e).__name__}: {e} (set DOCKYARD_DEBUG=1 for the traceback)", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def cluster_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``-c/--cluster`` after the subcommand too (``dockyard get svc -c prod``)."""

    def set_cluster(ctx: click.Context, param: Any, value: str | None) -> None:
        if value:
            ctx.find_object(Api).cluster = value

    return click.option("-c", "--cluster", "cluster_override", metavar="NAME", expose_value=False,
                        callback=set_cluster, help="Cluster (overrides the global -c).")(f)


pass_api = click.make_pass_decorator(Api)


def out(text: str = "") -> None:
    click.echo(text)


def warn(text: str) -> None:
    click.echo(f"warning: {text}", err=True)


def print_objects(obj: Any, fmt: str) -> None:
    out(render.to_json(obj) if fmt == "json" else render.to_yaml(obj))


def load_documents(files: Iterable[str]) -> list[dict[str, Any]]:
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
        if r.get("ignoredFields"):
            warn(f"{ref}: ignored unsupported fields: {', '.join(map(str, r['ignoredFields']))}")


# ---- root ---------------------------------------------------------------------------------
@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--server", envvar="DOCKYARD_SERVER", default=DEFAULT_SERVER, show_default=True, metavar="URL",
              help="Orchestrator API URL [env DOCKYARD_SERVER].")
@click.option("-c", "--cluster", envvar="DOCKYARD_CLUSTER", default=DEFAULT_CLUSTER, show_default=True, metavar="NAME",
              help="Cluster to work on [env DOCKYARD_CLUSTER].")
@click.version_option(__version__, "--version", prog_name="dockyard", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, server: str, cluster: str) -> None:
    """dockyard: a self-hosted container orchestrator modelled on AWS ECS.

    \b
    dockyard orchestrator                  start the control plane
    dockyard agent ...                     start the agent on a host
    dockyard apply -f manifests/           create or update task definitions and services
    dockyard get services                  list services (also: tasks, nodes, td, clusters)
    dockyard rollout status web            follow a deployment
    """
    api = Api(server, cluster)
    ctx.obj = api
    ctx.call_on_close(api.close)


# ---- apply / delete -----------------------------------------------------------------------
@cli.command()
@click.option("-f", "--filename", "files", multiple=True, required=True, metavar="FILE|DIR|-",
              help="Manifest file, directory (its *.yaml, *.yml, *.json) or - for stdin. Repeatable.")
@click.option("--dry-run", is_flag=True, help="Validate and show what would change; change nothing.")
@cluster_option
@pass_api
def apply(api: Api, files: tuple[str, ...], dry_run: bool) -> None:
    """Create or update objects from manifests (dockyard/v1 or ECS JSON)."""
    docs = load_documents(files)
    data = api.post("/v1/apply", {"documents": docs, "dryRun": dry_run}, cluster=api.cluster)
    print_results(data.get("results") or [], dry_run)


DELETE_VERB = {"service": "deleted", "taskdefinition": "deregistered", "task": "stopping", "node": "deregistered", "cluster": "deleted"}


@cli.command()
@click.argument("kind", type=KIND, required=False)
@click.argument("name", required=False)
@click.option("-f", "--filename", "files", multiple=True, metavar="FILE|DIR|-",
              help="Delete the objects these manifests define. Repeatable.")
@cluster_option
@pass_api
def delete(api: Api, kind: str | None, name: str | None, files: tuple[str, ...]) -> None:
    """Delete objects: `delete -f FILE` or `delete KIND NAME`.

    \b
    KIND: service (svc), taskdefinition (td; NAME is family:revision, deregisters it),
          task (stops it), node (deregisters it), cluster.
    """
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
    }[kind]()
    api.delete(path)
    out(f"{kind}/{name} {DELETE_VERB[kind]}")


# ---- get / describe -----------------------------------------------------------------------
def fetch_tasks(api: Api, service: str | None = None, include_stopped: bool = False) -> list[dict[str, Any]]:
    """Tasks not yet STOPPED (or all with include_stopped), oldest first.

    Asks for desiredStatus RUNNING and STOPPED separately, so tasks on their way down
    (desired STOPPED, last status not yet STOPPED) are listed too, whatever the server's
    default filter is.
    """
    seen: dict[str, dict[str, Any]] = {}
    for desired in ("RUNNING", "STOPPED"):
        data = api.get(api.cpath("tasks"), desiredStatus=desired, service=service)
        for t in data.get("tasks") or []:
            seen.setdefault(str(t.get("taskId")), t)
    tasks = [t for t in seen.values() if include_stopped or t.get("lastStatus") != "STOPPED"]
    return sorted(tasks, key=lambda t: (render.to_epoch(t.get("createdAt")) or 0, str(t.get("taskId"))))


def fetch_list(api: Api, kind: str, service: str | None = None, include_stopped: bool = False) -> list[dict[str, Any]]:
    if kind == "cluster":
        items = api.get("/v1/clusters").get("clusters") or []
        return sorted(items, key=lambda c: str(c.get("clusterName")))
    if kind == "taskdefinition":
        items = api.get("/v1/taskdefinitions").get("taskDefinitions") or []
        return sorted(items, key=lambda t: (str(t.get("family")), int(t.get("revision") or 0)))
    if kind == "service":
        items = api.get(api.cpath("services")).get("services") or []
        return sorted(items, key=lambda s: str(s.get("serviceName")))
    if kind == "node":
        items = api.get(api.cpath("nodes")).get("nodes") or []
        return sorted(items, key=lambda n: str(n.get("nodeId")))
    return fetch_tasks(api, service, include_stopped)


@cli.command()
@click.argument("kind", type=KIND)
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json", "yaml"]), default="table", show_default=True)
@click.option("--all", "-a", "include_stopped", is_flag=True, help="tasks: include STOPPED tasks.")
@click.option("--service", metavar="NAME", help="tasks: only the tasks of this service.")
@cluster_option
@pass_api
def get(api: Api, kind: str, name: str | None, output: str, include_stopped: bool, service: str | None) -> None:
    """List objects: clusters, taskdefinitions (td), services (svc), tasks, nodes.

    NAME filters the list (a task id prefix for tasks, a family or family:revision for
    task definitions).
    """
    if (include_stopped or service) and kind != "task":
        raise click.UsageError("--all and --service apply to tasks only")
    items = fetch_list(api, kind, service, include_stopped)
    if name:
        items = [o for o in items if matches(kind, o, name)]
        if not items:
            where = "" if kind in ("cluster", "taskdefinition") else f" in cluster {api.cluster}"
            raise CliError(f"{kind} {name} not found{where}")
    if output in ("json", "yaml"):
        print_objects(items, output)
        return
    if not items:
        where = "" if kind in ("cluster", "taskdefinition") else f" in cluster {api.cluster}"
        click.echo(f"No {PLURAL[kind]} found{where}.", err=True)
        return
    out(render.render_list(PLURAL[kind], items, wallclock(), wide=output == "wide"))


@cli.command()
@click.argument("kind", type=KIND)
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True)
@cluster_option
@pass_api
def describe(api: Api, kind: str, name: str | None, output: str) -> None:
    """Show one object in detail: service, task (id or unique prefix), node, td (family[:revision]), cluster."""
    if not name:
        if kind != "cluster":
            raise click.UsageError(f"give the {kind} name: dockyard describe {kind} NAME")
        name = api.cluster
    now = wallclock()
    if kind == "service":
        obj = unwrap(api.get(api.cpath("services", name)), "service")
        if output != "text":
            return print_objects(obj, output)
        tasks = [t for t in fetch_tasks(api, service=name)]
        out(render.describe_service(obj, tasks, now))
    elif kind == "task":
        obj = unwrap(api.get(api.cpath("tasks", name)), "task")
        if output != "text":
            return print_objects(obj, output)
        out(render.describe_task(obj, now))
    elif kind == "node":
        obj = unwrap(api.get(api.cpath("nodes", name)), "node")
        if output != "text":
            return print_objects(obj, output)
        tasks = [t for t in fetch_tasks(api) if t.get("nodeId") == obj.get("nodeId", name)]
        out(render.describe_node(obj, tasks, now))
    elif kind == "taskdefinition":
        obj = unwrap(api.get(f"/v1/taskdefinitions/{seg(name)}"), "taskDefinition")
        if output != "text":
            return print_objects(obj, output)
        out(render.describe_taskdefinition(obj, now))
    else:
        obj = unwrap(api.get(f"/v1/clusters/{seg(name)}"), "cluster")
        if output != "text":
            return print_objects(obj, output)
        out(render.describe_cluster(obj, now))
    return None


# ---- run / stop / scale -------------------------------------------------------------------
def wait_for_tasks(api: Api, task_ids: list[str], timeout: float | None) -> list[dict[str, Any]]:
    """Poll each task until it is STOPPED; status changes go to stderr. Returns the final records."""
    deadline = monotonic() + timeout if timeout else None
    final: dict[str, dict[str, Any]] = {}
    last: dict[str, str] = {}
    warned = False
    while True:
        for tid in task_ids:
            if tid in final:
                continue
            try:
                task = unwrap(api.get(api.cpath("tasks", tid)), "task")
            except UnreachableError as e:
                if not warned:
                    warn(f"{e.lines[0]}; retrying")
                    warned = True
                break
            status = str(task.get("lastStatus"))
            if last.get(tid) != status:
                last[tid] = status
                where = f" on {task['nodeId']}" if task.get("nodeId") else ""
                reason = f" ({task['pendingReason']})" if task.get("pendingReason") and status != "STOPPED" else ""
                click.echo(f"task {render.short_id(tid)} {status}{where}{reason}", err=True)
            if status == "STOPPED":
                final[tid] = task
        if len(final) == len(task_ids):
            return [final[t] for t in task_ids]
        if deadline is not None and monotonic() >= deadline:
            waiting = [f"{render.short_id(t)} ({last.get(t, 'unknown')})" for t in task_ids if t not in final]
            raise CliError(
                f"timed out after {timeout:g} s waiting for task(s) to stop: {', '.join(waiting)}; "
                f"they keep running (stop them with: dockyard stop TASK)"
            )
        sleep(RUN_POLL_SECONDS)


@cli.command()
@click.argument("taskdef", metavar="TASKDEF")
@click.option("--count", type=click.IntRange(1, 10), default=1, show_default=True, help="Number of tasks (1-10, as ECS).")
@click.option("--launch-type", type=click.Choice(["EC2", "FARGATE"], case_sensitive=False), default="EC2", show_default=True)
@click.option("--wait", is_flag=True, help="Wait until the tasks stop; exit with the essential container's exit code.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="With --wait: give up after this long (exit 1). Default: no limit.")
@cluster_option
@pass_api
def run(api: Api, taskdef: str, count: int, launch_type: str, wait: bool, timeout: float | None) -> int:
    """Run one-off tasks of TASKDEF (family or family:revision); prints the task ids."""
    data = api.post(api.cpath("tasks"), {"taskDefinition": taskdef, "count": count, "launchType": launch_type.upper()})
    tasks = data.get("tasks") or []
    failures = data.get("failures") or []
    for t in tasks:
        out(str(t.get("taskId")))
    for f in failures:
        warn(f"could not start a task: {f.get('reason') or f.get('error')}" + (f" ({f['detail']})" if f.get("detail") else ""))
    if not tasks:
        raise CliError("no task was started" + (f": {failures[0].get('reason')}" if failures else ""))
    if not wait:
        return 1 if failures else 0
    ids = [str(t.get("taskId")) for t in tasks]
    stopped = wait_for_tasks(api, ids, timeout)
    essential: set[str] | None = None
    ref = stopped[0].get("taskDefinition") or taskdef
    try:
        essential = essential_containers(unwrap(api.get(f"/v1/taskdefinitions/{seg(ref)}"), "taskDefinition"))
    except CliError:
        essential = None  # unknown: every container counts
    code, lines = run_exit_code(stopped, essential)
    for line in lines:
        out(line)
    return code or (1 if failures else 0)


@cli.command()
@click.argument("task")
@click.option("--reason", metavar="TEXT", help="Recorded as the task's stoppedReason.")
@cluster_option
@pass_api
def stop(api: Api, task: str, reason: str | None) -> None:
    """Stop a task (id or unique id prefix)."""
    data = api.post(api.cpath("tasks", task, "stop"), {"reason": reason})
    tid = unwrap(data, "task").get("taskId") or task
    out(f"task/{tid} stopping")


@cli.command()
@click.argument("service")
@click.argument("count", type=click.IntRange(min=0), metavar="N")
@cluster_option
@pass_api
def scale(api: Api, service: str, count: int) -> None:
    """Set a service's desiredCount."""
    api.post(api.cpath("services", service, "scale"), {"desiredCount": count})
    out(f"service/{service} scaled to {count}")


# ---- node ---------------------------------------------------------------------------------
@cli.group()
def node() -> None:
    """Drain or activate a node."""


@node.command()
@click.argument("node_id", metavar="NODE")
@cluster_option
@pass_api
def drain(api: Api, node_id: str) -> None:
    """Set a node DRAINING: no new tasks; service tasks move elsewhere."""
    api.post(api.cpath("nodes", node_id, "drain"))
    out(f"node/{node_id} draining")


@node.command()
@click.argument("node_id", metavar="NODE")
@cluster_option
@pass_api
def activate(api: Api, node_id: str) -> None:
    """Set a node ACTIVE again."""
    api.post(api.cpath("nodes", node_id, "activate"))
    out(f"node/{node_id} activated")


# ---- rollout ------------------------------------------------------------------------------
@cli.group()
def rollout() -> None:
    """Follow, list and undo service deployments."""


@rollout.command("status")
@click.argument("service")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Give up after this long (exit 1). Default: no limit.")
@cluster_option
@pass_api
def rollout_status(api: Api, service: str, timeout: float | None) -> int:
    """Wait for the service's deployment to finish: exit 0 when COMPLETED, 1 when it fails or is rolled back."""
    tty = sys.stdout.isatty()
    deadline = monotonic() + timeout if timeout else None
    initial: set[str] | None = None
    tracked: str | None = None
    shown = ""
    while True:
        svc = unwrap(api.get(api.cpath("services", service)), "service")
        if initial is None:
            initial = {str(d.get("id")) for d in svc.get("deployments") or [] if isinstance(d, dict)}
        verdict = rollout_verdict(svc, initial, tracked)
        tracked = verdict.tracked
        if verdict.state != "progress":
            if tty and shown:
                click.echo("\r\x1b[K", nl=False)
            if verdict.state == "complete":
                out(verdict.message)
                return 0
            raise CliError(verdict.message)
        if verdict.message != shown:
            if tty:
                click.echo("\r\x1b[K" + verdict.message, nl=False)
            else:
                out(verdict.message)
            shown = verdict.message
        if deadline is not None and monotonic() >= deadline:
            if tty:
                click.echo("")
            raise CliError(f"timed out after {timeout:g} s waiting for service {service} to roll out: {verdict.message}")
        sleep(ROLLOUT_POLL_SECONDS)


@rollout.command("history")
@click.argument("service")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
@cluster_option
@pass_api
def rollout_history(api: Api, service: str, output: str) -> None:
    """List the service's deployments, newest first."""
    deps = api.get(api.cpath("services", service, "deployments")).get("deployments") or []
    if output != "table":
        return print_objects(deps, output)
    if not deps:
        click.echo(f"No deployments of service {service}.", err=True)
        return None
    out(render.deployments_table(deps, wallclock()))
    return None


@rollout.command("undo")
@click.argument("service")
@cluster_option
@pass_api
def rollout_undo(api: Api, service: str) -> None:
    """Roll the service back to the task definition of its previous deployment."""
    svc = unwrap(api.post(api.cpath("services", service, "rollback")), "service")
    td = render.service_taskdef(svc) if svc else None
    out(f"service/{service} rolled back" + (f" to {td}" if td else ""))


# ---- daemons (lazy imports) ---------------------------------------------------------------
@cli.command("orchestrator")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT", help="HTTP API address.")
@click.option("--store", default=None, metavar="PATH", help="SQLite store file. Default: in the user data directory.")
@click.option("--mqtt", default="mqtt://127.0.0.1:1883", show_default=True, metavar="URL", help="MQTT broker.")
@click.option("--node-lost-seconds", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True, metavar="SECONDS",
              help="How long a node may stay disconnected (MQTT Will fired, or no heartbeat) before its tasks "
                   "are replaced elsewhere; a node that returns later drops them (fencing).")
@click.option("--mass-loss-fraction", type=click.FloatRange(min=0, max=1), default=0.55, show_default=True,
              metavar="FRACTION",
              help="When more than this share of a cluster's nodes is disconnected (and some stay connected), "
                   "node-lost replacements are rate-limited by --mass-loss-interval (Kubernetes' "
                   "unhealthyZoneThreshold). With every node disconnected none is declared lost.")
@click.option("--mass-loss-interval", type=click.FloatRange(min=0), default=30.0, show_default=True,
              metavar="SECONDS",
              help="During a mass loss, the tasks of at most one lost node are replaced per this many seconds, "
                   "oldest-disconnected first; 0 pauses node-lost replacements until enough nodes reconnect.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="info", show_default=True)
@click.option("--log-json", is_flag=True, help="Log JSON lines instead of text.")
def orchestrator_cmd(listen: str, store: str | None, mqtt: str, node_lost_seconds: float, mass_loss_fraction: float,
                     mass_loss_interval: float, log_level: str, log_json: bool) -> None:
    """Run the control-plane daemon (HTTP API, store, controllers)."""
    try:
        from orchestrator.daemon import run as run_daemon
    except ImportError as e:
        raise CliError(f"the orchestrator cannot start: {e} (install dockyard with all its dependencies: pip install dockyard)") from None
    sys.exit(run_daemon(listen=listen, store=store, mqtt=mqtt, node_lost_seconds=node_lost_seconds,
                        mass_loss_fraction=mass_loss_fraction, mass_loss_interval=mass_loss_interval,
                        log_level=log_level.lower(), log_json=log_json))


@cli.command("agent", add_help_option=False, short_help="Run the per-host agent (drives Docker; see dockyard agent --help).",
             context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def agent_cmd(args: tuple[str, ...]) -> Any:
    """Run the per-host agent; all arguments go to it (see dockyard agent --help)."""
    try:
        from agent.main import agent_command
    except ImportError as e:
        raise CliError(f"the agent cannot start: {e} (install dockyard with all its dependencies: pip install dockyard)") from None
    return agent_command.main(args=list(args), prog_name="dockyard agent", standalone_mode=False)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="dockyard")


if __name__ == "__main__":  # pragma: no cover
    main()
