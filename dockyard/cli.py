"""The `dockyard` console script: the client commands and the two daemons in one command tree.

    dockyard apply -f manifests/          # kubectl-style client commands (orchestrator.client)
    dockyard get services -o wide
    dockyard orchestrator                 # the control-plane daemon (imported lazily)
    dockyard agent ...                    # the per-host agent (imported lazily)

The daemons are imported only inside their commands, so ``dockyard get ...`` loads neither
uvicorn nor aiodocker and an agent host needs none of the API server's dependencies.
Exit codes and error lines: :mod:`orchestrator.client.errors` (docs/cli.md).
"""
from __future__ import annotations

import sys
from typing import Any

import click

from dockyard import __version__, logflags
from dockyard.wire import PROTOCOL_VERSION
from orchestrator.client import commands as client_commands
from orchestrator.client.api import DEFAULT_CLUSTER, DEFAULT_SERVER, find_token
from orchestrator.client.errors import CliError, exit_reporting_errors
from orchestrator.client.session import Session

CLIENT_COMMANDS = ["apply", "delete", "get", "describe", "run", "stop", "scale", "node", "rollout", "secret",
                   "accesskey", "token", "events", "top", "login"]
DAEMON_COMMANDS = ["orchestrator", "agent", "broker", "ca"]


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
        exit_reporting_errors(
            lambda: super(RootGroup, self).main(args, prog_name or "dockyard", complete_var, standalone_mode=False, **extra))


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--server", envvar="DOCKYARD_SERVER", default=None, metavar="URL",
              help=f"Orchestrator API URL [env DOCKYARD_SERVER; else the context's; else {DEFAULT_SERVER}].")
@click.option("-c", "--cluster", envvar="DOCKYARD_CLUSTER", default=DEFAULT_CLUSTER, show_default=True, metavar="NAME",
              help="Cluster to work on [env DOCKYARD_CLUSTER].")
@click.option("--token", envvar="DOCKYARD_TOKEN", default=None, metavar="TOKEN",
              help="API bearer token [env DOCKYARD_TOKEN; else the context's; else the file DOCKYARD_TOKEN_FILE "
                   "or ~/.config/dockyard/token].")
@click.option("--ca", envvar="DOCKYARD_CA", default=None, metavar="FILE",
              help="CA certificate an https:// server's certificate must be signed by [env DOCKYARD_CA; else the "
                   "context's; else the system's].")
@click.option("--context", envvar="DOCKYARD_CONTEXT", default=None, metavar="NAME",
              help="A context of the CLI config (dockyard login writes it) [env DOCKYARD_CONTEXT; else its "
                   "current-context].")
@click.version_option(__version__, "--version", prog_name="dockyard",
                      message=f"%(prog)s %(version)s (wire protocol {PROTOCOL_VERSION})")
@click.pass_context
def cli(ctx: click.Context, server: str | None, cluster: str, token: str | None, ca: str | None,
        context: str | None) -> None:
    """dockyard: a self-hosted container orchestrator modelled on AWS ECS.

    \b
    dockyard orchestrator                  start the control plane
    dockyard agent ...                     start the agent on a host
    dockyard apply -f manifests/           create or update task definitions and services
    dockyard get services                  list services (also: tasks, nodes, td, clusters)
    dockyard rollout status web            follow a deployment
    """
    from orchestrator.client import config

    session = ctx.ensure_object(Session)  # tests pass their own (transport, clock) as obj=
    # The daemons read no CLI config (a broken one must not stop them).
    cfg = config.Config() if ctx.invoked_subcommand in DAEMON_COMMANDS else config.load(config.default_path())
    target = config.resolve(cfg, server, token, ca, context)
    session.connect(target.server or DEFAULT_SERVER, cluster, find_token(target.token), target.ca)
    ctx.call_on_close(session.close)


for _command in client_commands():
    cli.add_command(_command)


# ---- daemons (lazy imports) ---------------------------------------------------------------
@cli.command("orchestrator")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT", help="HTTP API address.")
@click.option("--store", default=None, metavar="PATH|URL",
              help="SQLite store file (or sqlite:///PATH), or postgresql://USER@HOST:PORT/DB for several orchestrators "
                   "(docs/high-availability.md). Default: a SQLite file in the user data directory.")
@click.option("--mqtt", default="mqtt://127.0.0.1:1883", show_default=True, metavar="URL", help="MQTT broker.")
@click.option("--mqtt-ca", default=None, metavar="FILE",
              help="CA certificate that an mqtts:// broker's certificate must be signed by (default: the system's).")
@click.option("--mqtt-credentials", default=None, metavar="FILE",
              help="The orchestrator's broker login (JSON file written by `dockyard broker init`); with it the "
                   "orchestrator also issues and revokes node credentials (docs/security.md).")
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
@click.option("--secrets-key-file", default=None, metavar="PATH",
              help="Key that encrypts secrets in the store (Fernet), created with mode 0600 on first start. "
                   "Default: beside the store file (STORE.secrets-key). Back it up with the store.")
@click.option("--epoch-window", type=click.IntRange(min=1), default=10_000, show_default=True, metavar="N",
              help="A node showing a desired epoch newer than ours (forged, or a store restored from an older "
                   "backup) is taken back with a higher epoch if it is at most N above ours; beyond that only an "
                   "alert (docs/security.md).")
@click.option("--insecure-no-auth", is_flag=True,
              help="Serve the API WITHOUT tokens: anyone who reaches it may do anything (logged loudly).")
@click.option("--anonymous-reads", is_flag=True, help="Let requests without a token read (GET); writes still need one.")
@click.option("--admin-token-file", default=None, metavar="PATH",
              help="Where the first start writes the admin token it creates when the store has none "
                   "(mode 0600). Default: the CLI's token file, $XDG_CONFIG_HOME/dockyard/token.")
@click.option("--tls-cert", default=None, metavar="FILE",
              help="Serve the API over HTTPS with this certificate (PEM; `dockyard ca` makes one).")
@click.option("--tls-key", default=None, metavar="FILE", help="The private key of --tls-cert (PEM).")
@click.option("--insecure", is_flag=True,
              help="Start on a non-loopback --listen without TLS or without tokens (refused otherwise; logged loudly).")
@click.option("--lease-seconds", type=click.FloatRange(min=0.5), default=3.0, show_default=True, metavar="SECONDS",
              help="With a PostgreSQL store: the leader's lease (renewed 6 times per lease); a standby takes over "
                   "this long after the leader was last heard (docs/high-availability.md).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="info", show_default=True)
@logflags.format_options
def orchestrator_cmd(listen: str, store: str | None, mqtt: str, mqtt_ca: str | None, mqtt_credentials: str | None,
                     node_lost_seconds: float, mass_loss_fraction: float,
                     mass_loss_interval: float, secrets_key_file: str | None, epoch_window: int,
                     insecure_no_auth: bool, anonymous_reads: bool, admin_token_file: str | None,
                     tls_cert: str | None, tls_key: str | None, insecure: bool, lease_seconds: float, log_level: str,
                     log_json: bool) -> None:
    """Run the control-plane daemon (HTTP API, store, controllers)."""
    try:
        from orchestrator.daemon import run as run_daemon
    except ImportError as e:
        raise CliError(f"the orchestrator cannot start: {e} (install dockyard with all its dependencies: pip install dockyard)") from None
    sys.exit(run_daemon(listen=listen, store=store, mqtt=mqtt, node_lost_seconds=node_lost_seconds,
                        mass_loss_fraction=mass_loss_fraction, mass_loss_interval=mass_loss_interval,
                        secrets_key_file=secrets_key_file, epoch_window=epoch_window,
                        mqtt_credentials=mqtt_credentials, mqtt_ca=mqtt_ca, insecure_no_auth=insecure_no_auth,
                        anonymous_reads=anonymous_reads, admin_token_file=admin_token_file, tls_cert=tls_cert,
                        tls_key=tls_key, insecure=insecure, lease_seconds=lease_seconds, log_level=log_level.lower(),
                        log_json=log_json))


@cli.group("store")
def store_cmd() -> None:
    """Work on the orchestrator's store (SQLite file or PostgreSQL database)."""


@store_cmd.command("migrate")
@click.option("--from", "source", required=True, metavar="PATH", help="The SQLite store file (no orchestrator may run on it).")
@click.option("--to", "target", required=True, metavar="URL", help="An empty PostgreSQL database: postgresql://USER@HOST:PORT/DB.")
def store_migrate(source: str, target: str) -> None:
    """Copy a SQLite store into an empty PostgreSQL database (then start the orchestrators with --store URL and
    the same --secrets-key-file: the store's secrets stay encrypted with that key)."""
    from orchestrator.store import StoreError, redact
    from orchestrator.store_errors import StoreUnavailable
    from orchestrator.store_migrate import migrate

    try:
        counts = migrate(source, target)
    except (StoreError, StoreUnavailable) as exc:
        raise CliError(str(exc)) from None
    click.echo(f"copied {counts['records']} records, {counts['secrets']} secret versions and {counts['meta']} "
               f"settings (epoch, API tokens) from {source} to {redact(target)}")


@cli.group("broker")
def broker_cmd() -> None:
    """Set up the MQTT broker (Mosquitto with its dynamic-security plugin)."""


@broker_cmd.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--port", type=click.IntRange(1, 65535), default=1883, show_default=True)
@click.option("--bind", default="127.0.0.1", show_default=True, help="Listener address.")
@click.option("--persistence", is_flag=True, help="Keep retained messages across broker restarts (in DIRECTORY/data).")
@click.option("--broker-user", default="mosquitto", show_default=True,
              help="The user Mosquitto drops to when started as root: it must read and rewrite the plugin's file.")
@click.option("--tls-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="Also a TLS listener (8883 by convention): a CA and the broker's certificate go to DIRECTORY/tls.")
@click.option("--tls-bind", default="0.0.0.0", show_default=True, help="TLS listener address.")
@click.option("--tls-name", "tls_names", multiple=True, metavar="NAME|IP",
              help="A name clients reach the broker by, in its certificate (repeatable).  [default: this host's name]")
@click.option("--orchestrator-credentials", "login_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="The second broker of a pair: the orchestrator login of the first one (its "
                   "orchestrator-credentials.json) instead of a new one (docs/high-availability.md).")
def broker_init(directory: str, port: int, bind: str, persistence: bool, broker_user: str, tls_port: int | None,
                tls_bind: str, tls_names: tuple[str, ...], login_file: str | None) -> None:
    """Write DIRECTORY/mosquitto.conf (no anonymous access), the plugin's DIRECTORY/dynsec/dynamic-security.json
    holding the orchestrator's client, and DIRECTORY/orchestrator-credentials.json (mode 0600) for `dockyard
    orchestrator --mqtt-credentials`. Run the broker with `mosquitto -c DIRECTORY/mosquitto.conf`."""
    import json
    import os
    import pwd
    from pathlib import Path

    from dockyard import dynsec
    from dockyard.mqtt import load_credentials, write_credentials

    login = None
    if login_file is not None:
        try:
            login = load_credentials(login_file)
        except ValueError as e:
            raise CliError(str(e).replace("--mqtt-credentials", "--orchestrator-credentials", 1)) from None
        if login is not None and login.username != dynsec.ORCHESTRATOR_USER:
            raise CliError(f"--orchestrator-credentials {login_file}: the login {login.username!r} is not the "
                           f"orchestrator's ({dynsec.ORCHESTRATOR_USER!r}); give the orchestrator-credentials.json "
                           "that `dockyard broker init` wrote for the pair's first broker")
    d = Path(directory).absolute()
    state = d / "dynsec"
    config = state / "dynamic-security.json"
    if config.exists():
        raise CliError(f"{config} exists: the broker is set up already (remove the directory to start over)")
    state.mkdir(parents=True, mode=0o700, exist_ok=True)
    data = d / "data"
    if persistence:
        data.mkdir(mode=0o700, exist_ok=True)
    password = login.password if login is not None else dynsec.new_password()
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dynsec.initial_config(password), fh, indent=2)
    owned = [state, config] + ([data] if persistence else [])
    tls = None
    if tls_port is not None:
        import socket

        from dockyard import certs

        tdir = d / "tls"
        tdir.mkdir(mode=0o755, exist_ok=True)
        ca_pem, ca_key = certs.ca()
        cert_pem, key_pem = certs.server_cert(ca_pem, ca_key, list(tls_names) or [socket.gethostname()])
        (tdir / "ca.crt").write_bytes(ca_pem)
        (tdir / "broker.crt").write_bytes(cert_pem)
        for name, pem in (("ca.key", ca_key), ("broker.key", key_pem)):
            kfd = os.open(tdir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(kfd, "wb") as kf:
                kf.write(pem)
        owned.append(tdir / "broker.key")
        tls = dynsec.TlsListener(tls_port, tls_bind, str(tdir / "ca.crt"), str(tdir / "broker.crt"),
                                 str(tdir / "broker.key"))
    if os.geteuid() == 0:  # Mosquitto started as root runs as broker_user: it owns what it reads and rewrites
        try:
            pw = pwd.getpwnam(broker_user)
        except KeyError:
            raise CliError(f"--broker-user {broker_user}: no such user (Debian's mosquitto package creates "
                           "'mosquitto')") from None
        for p in owned:
            os.chown(p, pw.pw_uid, pw.pw_gid)
    (d / "mosquitto.conf").write_text(dynsec.mosquitto_conf(str(config), port, bind,
                                                            str(data) if persistence else None, tls))
    write_credentials(d / "orchestrator-credentials.json",
                      dynsec.Credentials(username=dynsec.ORCHESTRATOR_USER, password=password))
    click.echo(f"broker configuration in {d}: mosquitto -c {d / 'mosquitto.conf'}\n"
               f"orchestrator: dockyard orchestrator --mqtt mqtt://{bind}:{port} "
               f"--mqtt-credentials {d / 'orchestrator-credentials.json'}")
    if tls is not None:
        click.echo(f"over TLS: --mqtt mqtts://{(tls_names or ('HOST',))[0]}:{tls_port} --mqtt-ca {tls.cafile} "
                   f"(copy {tls.cafile} to the agents' hosts; keep {d / 'tls' / 'ca.key'} offline)")


@cli.command("ca")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--api-name", "api_names", multiple=True, metavar="NAME|IP",
              help="A name clients reach the orchestrator's API by (repeatable): makes api.crt/api.key.")
@click.option("--broker-name", "broker_names", multiple=True, metavar="NAME|IP",
              help="A name clients reach the broker's TLS listener by (repeatable): makes broker.crt/broker.key.")
def ca_cmd(directory: str, api_names: tuple[str, ...], broker_names: tuple[str, ...]) -> None:
    """Make a CA in DIRECTORY (ca.crt; ca.key mode 0600: keep it offline) unless it holds one, and the server
    certificates it signs, their subjectAltNames the given names: api.crt/api.key for `dockyard orchestrator
    --tls-cert/--tls-key`, broker.crt/broker.key for Mosquitto's TLS listener. Clients verify with ca.crt."""
    import os
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from dockyard import certs
    from orchestrator.core.join import fingerprint

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def write(name: str, pem: bytes, mode: int) -> Path:
        fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(pem)
        return d / name

    if (d / "ca.crt").exists() and (d / "ca.key").exists():
        ca_pem, ca_key = (d / "ca.crt").read_bytes(), (d / "ca.key").read_bytes()
        click.echo(f"using the CA in {d}")
    else:
        ca_pem, ca_key = certs.ca()
        write("ca.crt", ca_pem, 0o644)
        write("ca.key", ca_key, 0o600)
        click.echo(f"CA: {d / 'ca.crt'} (give it to clients); {d / 'ca.key'} (0600: keep it offline)")
    for what, names in (("api", api_names), ("broker", broker_names)):
        if not names:
            continue
        try:
            cert_pem, key_pem = certs.server_cert(ca_pem, ca_key, list(names))
        except ValueError as e:
            raise CliError(f"{d / 'ca.key'}: {e}") from None
        write(f"{what}.crt", cert_pem, 0o644)
        write(f"{what}.key", key_pem, 0o600)
        fp = fingerprint(x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER))
        click.echo(f"{what}: {d / (what + '.crt')}, {d / (what + '.key')} for {', '.join(names)} ({fp})")
    if not api_names and not broker_names:
        click.echo("no server certificate asked for: give --api-name and/or --broker-name")


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
