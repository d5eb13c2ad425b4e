"""--log-format json|text and its alias --log-json, as both daemons take them."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from dockyard.logflags import format_options


@click.command()
@format_options
def cmd(log_json: bool) -> None:
    click.echo(f"json={log_json}")


@pytest.mark.parametrize(("args", "out"), [([], "json=False"), (["--log-format", "json"], "json=True"),
                                           (["--log-format", "text"], "json=False"), (["--log-json"], "json=True"),
                                           (["--log-json", "--log-format", "json"], "json=True")])
def test_log_format_and_its_alias(args, out):
    r = CliRunner().invoke(cmd, args)
    assert r.exit_code == 0 and r.output.strip() == out, r.output


def test_contradicting_flags_are_a_usage_error():
    r = CliRunner().invoke(cmd, ["--log-format", "text", "--log-json"])
    assert r.exit_code == 2 and "contradicts" in r.output


def test_both_daemons_take_it():
    from agent.main import agent_command
    from dockyard.cli import orchestrator_cmd

    for c in (agent_command, orchestrator_cmd):
        assert {"--log-format", "--log-json"} <= {o for p in c.params for o in p.opts}
