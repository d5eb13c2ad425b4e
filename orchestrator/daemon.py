"""`dockyard orchestrator`: store + controller + MQTT bus + HTTP API in one asyncio loop."""
from __future__ import annotations

import asyncio
import ipaddress
import signal
import socket
import sqlite3
from pathlib import Path

import uvicorn

from dockyard import gcpolicy
from dockyard import log as dlog
from dockyard.dynsec import Credentials
from dockyard.keyfile import KeyFileError
from dockyard.mqtt import broker_urls, check_ca, load_credentials
from orchestrator import metrics
from orchestrator.api import create_app
from orchestrator.auth import Tokens
from orchestrator.autoscaler import Autoscaler
from orchestrator.broker_admin import BrokerAdmin, BrokerAdmins
from orchestrator.bus import Bus
from orchestrator.buses import Buses
from orchestrator.client.api import default_token_file
from orchestrator.controller import Controller
from orchestrator.core.fencing import EPOCH_WINDOW
from orchestrator.join import JoinTokens
from orchestrator.join import router as join_router
from orchestrator.lb_requests import RequestBook
from orchestrator.leader import LEASE_SECONDS, Lease
from orchestrator.ops import Ops
from orchestrator.relay import Relay
from orchestrator.secrets import SecretStore, default_key_path, load_key
from orchestrator.standby import Reads, Switch, standby_app
from orchestrator.state import State
from orchestrator.store import StoreError, default_store_path, files_base, open_store, redact
from orchestrator.store_errors import StoreUnavailable
from orchestrator.store_pg import Fenced, PgStore
from orchestrator.tls import ApiTls, exposure_refusal
from orchestrator.tls import load as load_tls
from orchestrator.usage import UsageBook


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _listen(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"--listen {addr!r}: use HOST:PORT, e.g. 127.0.0.1:8080")
    return host or "127.0.0.1", int(port)


async def serve(listen: str, store_spec: str, mqtt: str, node_lost_seconds: float,
                mass_loss_fraction: float = 0.55, mass_loss_interval: float = 30.0,
                secrets_key_file: Path | None = None, epoch_window: int = EPOCH_WINDOW,
                mqtt_credentials: Credentials | None = None, mqtt_ca: str | None = None,
                insecure_no_auth: bool = False, anonymous_reads: bool = False,
                admin_token_file: Path | None = None, lease_seconds: float = LEASE_SECONDS,
                tls: ApiTls | None = None, insecure: bool = False) -> None:
    log = dlog.get("orchestrator")
    host, port = _listen(listen)
    refusal = exposure_refusal(_loopback(host), tls is not None, not insecure_no_auth, insecure)
    if refusal:
        raise ValueError(refusal)
    # Bind before anything else, so an address in use is a clear error and exit 1 (uvicorn would
    # sys.exit inside its task instead).
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; is another orchestrator running? "
                      "choose another address with --listen") from None
    sock.setblocking(False)
    store = open_store(store_spec)
    store_path = files_base(store_spec)
    key_path = secrets_key_file or default_key_path(store_path)
    try:
        secrets = SecretStore(store, load_key(key_path), key_path)
    except BaseException:
        store.close()
        raise
    self_target = f"{socket.gethostname() if host in ('0.0.0.0', '::') else host}:{port}"
    # uvicorn (>= 0.29) captures SIGINT/SIGTERM only while serve() runs and re-raises them after;
    # our own handlers below set `stop`, which ends serve() through should_exit.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    switch = Switch(None)
    config = uvicorn.Config(switch, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                            ssl_certfile=tls.certfile if tls else None, ssl_keyfile=tls.keyfile if tls else None)
    server = uvicorn.Server(config)
    api_task: asyncio.Task | None = None
    lease: Lease | None = None
    if isinstance(store, PgStore):
        # Several orchestrators on one database: a standby (alive, forwarding the API) until it takes the lease.
        lease = Lease(store, f"{'https' if tls else 'http'}://{self_target}", lease_seconds)
        switch.app = standby_app(lease, Reads(lambda: _read_app(store.url, _loopback(host), insecure_no_auth,
                                                                anonymous_reads)))
        api_task = asyncio.create_task(server.serve(sockets=[sock]), name="api")
        log.info("orchestrator starting as a standby", listen=f"{host}:{port}", store=redact(store_spec))
        elected = await lease.campaign(stop)
        if elected is None:
            server.should_exit = True
            await asyncio.gather(api_task, return_exceptions=True)
            store.close()
            return
        epoch = elected
        log.info("took the lease: leading", epoch=epoch)
    else:
        epoch = store.next_epoch()
    state = State(store)
    bus: Bus | Buses | None = None

    async def publish(doc):
        assert bus is not None
        if lease is not None and not lease.holds():
            # Past our lease (paused, or the database unreachable): another may lead with a newer epoch.
            raise Fenced(f"not publishing: the lease of epoch {epoch} is not held")
        await bus.publish(doc)

    gcpolicy.tune()  # the loaded state is frozen (dockyard.gcpolicy)
    gcpolicy.timer(lambda generation, seconds: metrics.GC_SECONDS.labels(generation=str(generation)).inc(seconds))
    ctl = Controller(state, epoch, publish, node_lost_seconds=node_lost_seconds,
                     mass_loss_fraction=mass_loss_fraction, mass_loss_interval=mass_loss_interval, secrets=secrets,
                     epoch_window=epoch_window)
    usage = UsageBook()
    requests = RequestBook()
    urls = broker_urls(mqtt)
    bus = Bus(mqtt, ctl, usage=usage, credentials=mqtt_credentials, ca_file=mqtt_ca, requests=requests) \
        if len(urls) == 1 else Buses(urls, ctl, usage=usage, credentials=mqtt_credentials, ca_file=mqtt_ca,
                                     requests=requests)
    relay = Relay(bus)
    ops = Ops(state, ctl)
    autoscaler = Autoscaler(ops, usage, requests=requests)
    admin: BrokerAdmin | BrokerAdmins | None = None
    if mqtt_credentials is not None:
        admins = [BrokerAdmin(u, mqtt_credentials, mqtt_ca) for u in urls]
        admin = admins[0] if len(admins) == 1 else BrokerAdmins(admins, log)
    tokens = None
    if insecure_no_auth:
        log.warning("!!! --insecure-no-auth: ANYONE WHO REACHES THE API MAY APPLY, SCALE, STOP AND DELETE !!!",
                    listen=f"{host}:{port}")
    else:
        tokens = Tokens(store, anonymous_reads=anonymous_reads)
        # The CLI's token file, else beside the store (a service's user may have no writable home).
        home_file = default_token_file()
        paths = [admin_token_file] if admin_token_file else [
            *([home_file] if home_file is not None else []), store_path.with_name(store_path.name + ".admin-token")]
        written = tokens.bootstrap(*paths)
        if written is not None:
            log.warning("no API token existed: an admin token was created", token_file=str(written))
    if not _loopback(host) and (tls is None or tokens is None):
        log.warning("!!! --insecure: THE API LISTENS BEYOND LOOPBACK WITHOUT "
                    + ("TLS AND TOKENS" if tls is None and tokens is None else "TLS" if tls is None else "TOKENS")
                    + ": whoever reaches it or the network in between may read tokens or act !!!",
                    listen=f"{host}:{port}")
    assert bus is not None
    app = create_app(ops, ready=lambda: bus.connected.is_set(), loopback=_loopback(host), usage=usage,
                     self_target=self_target, broker_admin=admin, tokens=tokens, on_node_deleted=bus.forget_node,
                     relay=relay)
    app.include_router(join_router(JoinTokens(store), admin, tls.fingerprint if tls else None))
    switch.app = app
    if api_task is None:
        api_task = asyncio.create_task(server.serve(sockets=[sock]), name="api")
    log.info("orchestrator starting", listen=f"{'https' if tls else 'http'}://{host}:{port}", store=redact(store_spec),
             secrets_key=str(key_path), mqtt=mqtt, epoch=epoch, tls_fingerprint=tls.fingerprint if tls else None,
             services=len(state.services), tasks=len(state.tasks), nodes=len(state.nodes))
    tasks = [
        asyncio.create_task(gcpolicy.collect_middle(), name="gc"),  # cancelled below, as the bus and controller
        asyncio.create_task(bus.run(stop), name="bus"),
        asyncio.create_task(ctl.run(stop), name="controller"),
        api_task,
        asyncio.create_task(autoscaler.run(stop), name="autoscaler"),
    ]
    stopper = asyncio.create_task(stop.wait())
    waits = [stopper, api_task] + ([asyncio.create_task(lease.lost.wait())] if lease is not None else [])
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    lost = lease is not None and lease.lost.is_set()
    failed = not stop.is_set() and not lost  # the API server ended by itself
    if failed:
        log.error("the HTTP API stopped unexpectedly", listen=f"{host}:{port}")
    stop.set()
    log.info("orchestrator stopping")
    server.should_exit = True
    await asyncio.wait([api_task, tasks[-1]], timeout=3)  # the API server and the autoscaler end by themselves
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, stopper, return_exceptions=True)
    for w in waits:
        w.cancel()
    try:
        state.flush()
    except StoreUnavailable as exc:  # fenced (another leads) or the database is gone: it has what was acknowledged
        log.warning("the last changes were not written", error=str(exc))
    if lease is not None:
        lease.close()
    store.close()
    if failed:
        raise OSError(f"the HTTP API on {host}:{port} stopped")
    if lost:
        raise StoreError("lost the leadership to another orchestrator (a newer epoch); exiting so that a restart "
                         "rejoins as a standby")


def _read_app(url: str, loopback: bool, insecure_no_auth: bool, anonymous_reads: bool):  # noqa: ANN202
    """A standby's read view: the API over the state as the leader last wrote it, on a connection of its own
    (STOPPED tasks are read from the database); it never writes: its flush is a no-op and only reads reach it.
    Returns (app, close)."""
    rstore = open_store(url)
    state = State(rstore)
    def no_flush(defer_details: bool = False) -> int:
        return 0
    state.flush = no_flush  # type: ignore[method-assign]

    async def no_publish(_doc) -> None:  # noqa: ANN001
        return None
    ops = Ops(state, Controller(state, 0, no_publish))
    tokens = None if insecure_no_auth else Tokens(rstore, anonymous_reads=anonymous_reads)
    return create_app(ops, ready=lambda: False, loopback=loopback, tokens=tokens), rstore.close


def run(listen: str = "127.0.0.1:8080", store: str | None = None, mqtt: str = "mqtt://127.0.0.1:1883",
        node_lost_seconds: float = 3.0, log_level: str = "info", log_json: bool = False,
        mass_loss_fraction: float = 0.55, mass_loss_interval: float = 30.0, secrets_key_file: str | None = None,
        epoch_window: int = EPOCH_WINDOW, mqtt_credentials: str | None = None, mqtt_ca: str | None = None,
        insecure_no_auth: bool = False, anonymous_reads: bool = False, admin_token_file: str | None = None,
        lease_seconds: float = LEASE_SECONDS, tls_cert: str | None = None, tls_key: str | None = None,
        insecure: bool = False) -> int:
    dlog.configure(log_level, log_json)
    log = dlog.get("orchestrator")
    try:
        _listen(listen)
        urls = broker_urls(mqtt)
        creds = load_credentials(mqtt_credentials)
        for url in urls:
            check_ca(url, mqtt_ca)
        tls = load_tls(tls_cert, tls_key)
        spec = store or str(default_store_path())
        files_base(spec)  # an unsupported --store is refused before anything starts
        asyncio.run(serve(listen, spec, mqtt, node_lost_seconds, mass_loss_fraction, mass_loss_interval,
                          Path(secrets_key_file) if secrets_key_file else None, epoch_window, creds, mqtt_ca, insecure_no_auth,
                          anonymous_reads, Path(admin_token_file) if admin_token_file else None, lease_seconds,
                          tls=tls, insecure=insecure))
    except (ValueError, StoreError, StoreUnavailable, OSError, KeyFileError) as exc:
        log.error(str(exc))
        return 1
    except sqlite3.DatabaseError as exc:  # a corrupt file, or not a SQLite database at all
        log.error(f"the store {store or default_store_path()} cannot be read: {exc}; it is corrupt or not a "
                  "dockyard store: restore it from a backup, or move it away to start with an empty store")
        return 1
    return 0
