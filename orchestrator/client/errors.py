"""User-facing failures and how they end the process (docs/cli.md, "Exit codes and errors").

Every error is one line (or one line per invalid document) on stderr starting ``error:``;
a Python traceback is printed only with DOCKYARD_DEBUG=1.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import click

EXIT_OK = 0
EXIT_ERROR = 1  # API error, unreachable API, invalid manifest, timeout, failed rollout
EXIT_USAGE = 2  # click.UsageError's own exit code
EXIT_BROKEN_PIPE = 141  # stdout closed early (`dockyard get tasks | head -1`), as a shell reports SIGPIPE
EXIT_INTERRUPTED = 130  # Ctrl-C


class CliError(click.ClickException):
    """A user-facing failure: each line printed as ``error: LINE`` on stderr, exit 1."""

    exit_code = EXIT_ERROR

    def __init__(self, *lines: str) -> None:
        self.lines = [str(line) for line in lines] or ["failed"]
        super().__init__(self.lines[0])

    def show(self, file: Any = None) -> None:
        for line in self.lines:
            click.echo(f"error: {line}", err=True)


class UnreachableError(CliError):
    """The API could not be reached (connection refused, DNS, timeout): may be transient."""


class ApiError(CliError):
    """The API answered with an HTTP error status."""

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


def exit_reporting_errors(call: Callable[[], Any]) -> NoReturn:
    """Run a click command in non-standalone mode and exit as docs/cli.md says.

    A command's int return value is the exit status (``run --wait``, ``rollout status``);
    click errors print themselves (usage errors exit 2); anything else is a bug, reported
    in one line.
    """
    try:
        rv = call()
    except click.exceptions.Abort:  # click turns KeyboardInterrupt into Abort
        click.echo("", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        sys.exit(EXIT_BROKEN_PIPE)
    except Exception as e:  # noqa: BLE001 -- a bug: one line, the traceback only on request
        if os.environ.get("DOCKYARD_DEBUG"):
            traceback.print_exc()
        click.echo(f"error: internal error: {type(e).__name__}: {e} (set DOCKYARD_DEBUG=1 for the traceback)", err=True)
        sys.exit(EXIT_ERROR)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)
