"""The agent's wiring: one :class:`Agent` per node joins its parts and drives them.

* :mod:`agent.session`: MQTT connection, presence, reconnect; decodes desired documents;
* :mod:`agent.diff`: every decision (pure): which document applies, the plan, the reports;
* :mod:`agent.executor`: applies the plan's actions through the :mod:`agent.runtime` Runtime;
* :mod:`agent.reporter`: status snapshots, updates and acknowledgements (one publish path);
* :mod:`agent.state`: what the agent knows between passes.

Here: the reconcile loop (woken by documents, container events and the status tick), the
container event stream, the one timer, and the entry points: :func:`run` (blocking, returns
an exit code) and the click command :data:`agent_command` that the main CLI adds as
``dockyard agent``.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import click
from pydantic import ValidationError

from agent import diff
from agent.executor import Executor
from agent.lb.haproxy import LoadBalancerNode
from agent.reporter import Reporter
from agent.requests import serve_requests
from agent.runtime import Runtime
from agent.session import Session, parse_desired
from agent.state import NodeState
from dockyard import gcpolicy, log, logflags, sealing
from dockyard.keyfile import KeyFileError, load_or_create
from dockyard.mqtt import Backoff, broker_urls, check_ca, load_credentials
from dockyard.wire import DesiredDocHead

# Passes after a container event, at these delays (see Agent._on_event): a loaded dockerd can
# show an exited container as running in a list for seconds after its ``die`` event.
EVENT_SETTLE_SECONDS = (0.5, 1.5, 4.0)
DEFAULT_STATE_ROOT = "/var/lib/dockyard/agent"  # the state directory is <root>/<node id> unless given
RESTARTS_FILE = "restarts.json"  # in the state directory: restartPolicy counts by docker id
HIGH_WATER_FILE = "desired-version.json"  # in the state directory: the (epoch, generation) last applied
METADATA_PORT = 51679  # ECS's task metadata endpoint port (the ECS agent's)
DEFAULT_TASK_CLEANUP_WAIT = 3600.0  # 1 h (the ECS agent waits 3 h)


@dataclass
class AgentConfig:
    node_id: str
    cluster: str = "default"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_credentials: str | None = None  # a credentials file (dockyard node join -o FILE)
    mqtt_ca: str | None = None  # the CA an mqtts:// broker's certificate must be signed by
    join_url: str | None = None  # https://ORCHESTRATOR:PORT: exchange join_token for the credential (agent.join)
    join_token: str | None = None
    join_ca: str | None = None
    join_fingerprint: str | None = None
    docker_url: str = "unix:///var/run/docker.sock"
    attributes: dict[str, str] = field(default_factory=dict)
    runtime: str = "docker"  # "docker" | "hollow" (hollow: for control-plane benchmarks only)
    hollow_count: int = 1  # with runtime hollow: this many agents in one process, node ids f"{node_id}-{i}"
    capacity_providers: list[str] = field(default_factory=lambda: ["EC2"])
    # The agent's one timer ticks every heartbeat tick (beat_tick) and sends a light heartbeat;
    # every status_interval also MQTT keepalive housekeeping, a full snapshot, and a re-list when
    # relist_interval has passed. One wake-up per tick, because on a VM each wake-up of an idle
    # process costs milliseconds of CPU (bench/bus.py measures the idle cost).
    status_interval: float = 5.0
    # Light heartbeats between snapshots (dockyard.wire ``heartbeat``): a silent host (power or
    # link lost) is noticed ~3 s after its last beat, not after 3 missed snapshots. The tick is
    # status_interval divided evenly, at most this long (5 s / 1.5 s -> a tick every 1.25 s); 0: none.
    heartbeat_interval: float = 1.5
    relist_interval: float = 30.0  # level-triggered re-list of containers (events are the edge)
    image_pull_behavior: str = "default"  # ECS_IMAGE_PULL_BEHAVIOR: default | always | once | prefer-cached
    log_level: str = "info"
    log_json: bool = False
    load_balancer: bool = False  # run HAProxy for the cluster's load balancers (agent/lb)
    lb_dir: str | None = None  # default <state dir>/lb
    lb_bind: str = "0.0.0.0"  # the address listeners bind to
    advertise_address: str | None = None  # default: the source address of the broker connection
    metadata_port: int = METADATA_PORT  # task metadata endpoint v4; 0: not served
    state_dir: str | None = None  # what the agent keeps across restarts (metadata token secret, seal key)
    metrics_listen: str | None = None  # HOST:PORT of the agent's /metrics (agent.observe); None: not served
    usage_sampling: bool = True  # sample container usage at each status tick (Docker runtime)
    # Seconds a stopped task's containers are kept once it left the desired document (ECS's
    # ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION): its logs stay readable; removed at a re-list after.
    task_cleanup_wait: float = DEFAULT_TASK_CLEANUP_WAIT

    def beat_tick(self) -> float | None:
        """The heartbeat period: status_interval divided into equal ticks of at most
        heartbeat_interval (a snapshot falls on every n-th tick: one timer); None: no beats."""
        if self.heartbeat_interval <= 0 or self.heartbeat_interval >= self.status_interval:
            return None
        return self.status_interval / math.ceil(self.status_interval / self.heartbeat_interval - 1e-9)

    def state_path(self, node_id: str) -> Path:
        return Path(self.state_dir) if self.state_dir else Path(DEFAULT_STATE_ROOT) / node_id


def load_seal_key(state_dir: Path) -> bytes:
    """The node's X25519 private key (``seal.key``, created 0600 on first start): task secrets
    are sealed to its public half, published in the presence (docs/secrets.md)."""
    key, _ = load_or_create(state_dir / "seal.key", sealing.generate_private)
    if len(key) != 32:
        raise KeyFileError(f"{state_dir / 'seal.key'} is not a 32-byte X25519 key; remove it to create a new one")
    return key


class Agent:
    """One node's agent. Several can share an event loop (hollow runtime)."""

    def __init__(self, cfg: AgentConfig, node_id: str, runtime: Runtime, seal_key: bytes | None = None) -> None:
        self.cfg, self.node_id, self.rt = cfg, node_id, runtime
        seal_key = seal_key if seal_key is not None else sealing.generate_private()  # hollow: in memory
        self.boot_id = uuid.uuid4().hex
        self.log = log.get("agent", node=node_id, cluster=cfg.cluster)
        self.state = NodeState(node_id, self.log)
        self.wake = asyncio.Event()
        self.session = Session(
            node_id=node_id, cluster=cfg.cluster, mqtt_url=cfg.mqtt_url, boot_id=self.boot_id,
            status_interval=cfg.status_interval, attributes=cfg.attributes, capacity_providers=cfg.capacity_providers,
            runtime_name=runtime.name, log=self.log, on_connect=self._on_connect, on_message=self.on_desired,
            advertise_address=cfg.advertise_address, load_balancer=cfg.load_balancer,
            seal_key=sealing.public_key(seal_key), credentials=load_credentials(cfg.mqtt_credentials),
            mqtt_ca=cfg.mqtt_ca, heartbeat_interval=cfg.beat_tick())
        self.reporter = Reporter(self.state, self.session, self.boot_id, self.log)
        self.lb: LoadBalancerNode | None = None
        if cfg.load_balancer:
            lb_dir = Path(cfg.lb_dir) if cfg.lb_dir else cfg.state_path(node_id) / "lb"
            self.lb = LoadBalancerNode(lb_dir, cfg.lb_bind, self.log.bind(component="lb"), self._lb_changed)
            self.reporter.lb_status = self.lb.status
        self._lb_publish: asyncio.Task[None] | None = None
        self.executor = Executor(runtime, self.state, cfg.cluster, self.wake.set, self.log, seal_key=seal_key)
        self.last_relist = 0.0  # loop time of the last reconcile pass (which re-lists)
        self._networks_listed = False
        self._volumes_listed = False
        self._settle: asyncio.TimerHandle | None = None  # see _on_event
        self._settle_step = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.metadata: Any = None  # the MetadataServer while it serves
        self.observer: Any = None  # agent.observe.Observer: usage samples and /metrics (Docker runtime)
        self._sampling: asyncio.Task[None] | None = None
        self.requests: Any = None  # agent.requests.RequestServer: logs and exec (Docker runtime)
        self.high_water = self._load_high_water()
        self.reporter.floor = lambda: self.high_water

    # ---- desired documents --------------------------------------------------------------------
    async def _on_connect(self) -> None:
        await self.reporter.publish("snapshot")

    async def on_desired(self, payload: bytes) -> None:
        st = self.state
        applied = st.doc.version() if st.doc is not None else None
        try:
            head = DesiredDocHead.model_validate_json(payload)
            why = diff.rejects(head, self.node_id, self.cfg.cluster, applied, self.high_water)
            if why is None:
                doc = parse_desired(payload, head, st.doc)
        except ValidationError as e:
            self.log.warning("ignoring invalid desired document", error=str(e).splitlines()[0])
            return
        if why == diff.OTHER_NODE:
            self.log.warning("ignoring desired document for another node", docNode=head.nodeId, docCluster=head.cluster)
            return
        if why is not None:
            self.log.debug("ignoring stale desired document", version=head.version(), applied=applied)
            return
        previous, st.doc = st.doc, doc
        self._save_high_water(doc.version())
        if self.lb is not None:
            self.lb.set_desired(doc.loadBalancer)
        # The acknowledgement first, with the reports of only the tasks this document changed
        # (new, desiredStatus changed, removed): the reconcile pass woken here sends the rest.
        await self.reporter.ack(diff.changed_task_ids(previous, doc))
        self.wake.set()
        self.log.info("desired document applied", epoch=doc.epoch, generation=doc.generation, tasks=len(doc.tasks))

    def _lb_changed(self) -> None:
        """The LB's report changed (a target's health or sessions): send it now, one at a time."""
        if self._lb_publish is None or self._lb_publish.done():
            self._lb_publish = asyncio.create_task(self.reporter.publish("update", force=True))

    # ---- reconcile ----------------------------------------------------------------------------
    async def reconcile_loop(self) -> None:
        """Runs when woken: by a desired document, a container event, a finished action, or the
        status tick when a re-list is due (no timer of its own)."""
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            await self.wake.wait()
            self.wake.clear()
            self.last_relist = asyncio.get_running_loop().time()
            try:
                await self.reconcile_once()
                backoff.reset()
            except Exception as e:  # noqa: BLE001 - engine errors must not kill the agent
                delay = backoff.next()
                self.log.error("reconcile failed; retrying", error=f"{type(e).__name__}: {e}", retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                # Retry on our own: after a dockerd restart nothing else wakes a pass (the event
                # stream resubscribes silently, its dead containers send no events), so the node's
                # lost containers were seen only at the next re-list, ~30 s later (issue 16).
                self.wake.set()

    async def reconcile_once(self) -> None:
        st = self.state
        st.actual = await self.rt.list(self.node_id)
        if not self._networks_listed or st.networks or self._own_networks_desired():
            # Task networks exist only for tasks with a network of their own: list them on the
            # first pass (to remove leftovers) and while any are known or wanted; an idle node
            # without such tasks skips the request (each one is a wake-up, see status_loop).
            st.networks = await self.rt.list_networks(self.node_id)
            self._networks_listed = True
        if not self._volumes_listed or st.volumes or self._volumes_desired():
            st.volumes = await self.rt.list_volumes(self.node_id)  # the same rule for task volumes
            self._volumes_listed = True
        if st.doc is not None:  # no document yet: adopt and report, never remove anything
            self.executor.apply(diff.plan(st.doc.tasks, st.actual, self.node_id, st.finished, st.networks, st.volumes,
                                          now=time.time(), cleanup_wait=self.cfg.task_cleanup_wait))
        await self.reporter.publish("update")
        live = st.live_task_ids()
        st.prune(live)
        self.reporter.prune(live)

    def _volumes_desired(self) -> bool:
        doc = self.state.doc
        return doc is not None and any(t.taskDefinition.volumes for t in doc.tasks)

    def _own_networks_desired(self) -> bool:
        doc = self.state.doc
        return doc is not None and any(self.rt.task_network(t) is not None for t in doc.tasks)

    # ---- events / periodic ----------------------------------------------------------------------
    async def events_loop(self) -> None:
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            try:
                async for _ev in self.rt.events(self.node_id):
                    self._on_event()
                    backoff.reset()
                self.log.warning("container event stream ended; resubscribing")
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                self.log.warning("container event stream failed; resubscribing", error=f"{type(e).__name__}: {e}")
            self.wake.set()  # events may have been missed: re-list now, not at the next relist_interval
            await asyncio.sleep(backoff.next())

    def _on_event(self) -> None:
        """Wake a pass now, and again at each of EVENT_SETTLE_SECONDS: Docker sends ``die``
        before the container's new state is visible to a list (a pass woken by the event alone
        still saw it running, and nothing else woke the agent until the next re-list, 30 s later;
        on a loaded engine one pass 0.5 s later was not always enough)."""
        self.wake.set()
        if self._settle is None:
            self._settle_step = 0
            self._settle = asyncio.get_running_loop().call_later(EVENT_SETTLE_SECONDS[0], self._settled)

    def _settled(self) -> None:
        self.wake.set()
        self._settle_step += 1
        if self._settle_step < len(EVENT_SETTLE_SECONDS):
            delay = EVENT_SETTLE_SECONDS[self._settle_step] - EVENT_SETTLE_SECONDS[self._settle_step - 1]
            self._settle = asyncio.get_running_loop().call_later(delay, self._settled)
        else:
            self._settle = None

    async def status_loop(self) -> None:
        """The agent's only timer: a heartbeat every tick, and every status_interval MQTT
        housekeeping, a re-list when due, and a snapshot."""
        loop = asyncio.get_running_loop()
        tick = self.cfg.beat_tick() or self.cfg.status_interval
        beats = max(1, round(self.cfg.status_interval / tick))
        n = 0
        while True:
            await asyncio.sleep(tick)
            n += 1
            await self.session.beat()
            if n % beats:
                continue
            self.session.housekeeping()
            if loop.time() - self.last_relist >= self.cfg.relist_interval - 0.05:
                self.wake.set()
            if self.observer is not None and self.cfg.usage_sampling:
                self._sample_usage()
            try:
                await self.reporter.publish("snapshot")
            except Exception as e:  # noqa: BLE001
                self.log.warning("snapshot failed", error=str(e))

    # ---- life cycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            try:
                info = await self.rt.info()
                self.state.actual = await self.rt.list(self.node_id)  # adopt before the first desired doc
                break
            except Exception as e:  # noqa: BLE001
                delay = backoff.next()
                self.log.error("container engine unavailable; retrying", error=f"{type(e).__name__}: {e}", retry_in=round(delay, 2))
                await asyncio.sleep(delay)
        self.session.info = info
        self._load_restarts()
        if self.cfg.metadata_port:
            await self._start_metadata()
        await self._start_observer()
        self.requests = serve_requests(self)
        self.log.info("agent starting", bootId=self.boot_id, runtime=self.rt.name, cpu=info.cpu,
                      memory=info.memory, adopted=len(self.state.actual))
        self.wake.set()  # a first pass: report the adopted containers
        loops = [self.session.run(), self.reconcile_loop(), self.events_loop(), self.status_loop()]
        if self.lb is not None:
            loops.append(self.lb.run())
        for coro in loops:
            self._tasks.append(asyncio.create_task(coro))

    # ---- the high-water desired version, kept across agent restarts ---------------------------------
    def _load_high_water(self) -> tuple[int, int] | None:
        """The (epoch, generation) the agent that ran before applied last (Docker runtime; hollow ones keep none)."""
        if self.rt.name != "docker":
            return None
        path = self.cfg.state_path(self.node_id) / HIGH_WATER_FILE
        try:
            epoch, generation = json.loads(path.read_text())
            return int(epoch), int(generation)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            self.log.warning("desired high-water not loaded", file=str(path), error=str(e))
            return None

    def _save_high_water(self, version: tuple[int, int]) -> None:
        if self.rt.name != "docker" or (self.high_water is not None and version <= self.high_water):
            return
        self.high_water = version
        path = self.cfg.state_path(self.node_id) / HIGH_WATER_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(list(version)))
            os.replace(tmp, path)
        except OSError as e:
            self.log.warning("desired high-water not saved", file=str(path), error=str(e))

    # ---- restart counts (restartPolicy), kept across agent restarts ----------------------------------
    def _restarts_file(self) -> Path:
        return self.cfg.state_path(self.node_id) / RESTARTS_FILE

    def _load_restarts(self) -> None:
        """Counts of in-place restarts by docker id, as saved by the agent that ran before (Docker
        keeps no count of starts that are not its own restart policy's)."""
        if self.rt.name != "docker":
            return
        try:
            saved = json.loads(self._restarts_file().read_text())
            self.state.restarts.update({str(k): int(v) for k, v in saved.items()})
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as e:
            self.log.warning("restart counts not loaded", file=str(self._restarts_file()), error=str(e))
        self.executor.on_restart = self._save_restarts

    def _save_restarts(self) -> None:
        path = self._restarts_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state.restarts))
            os.replace(tmp, path)
        except OSError as e:
            self.log.warning("restart counts not saved; they restart from 0 with the agent", file=str(path),
                             error=str(e))

    async def _start_observer(self) -> None:
        """Usage sampling (sent in snapshots) and the optional /metrics endpoint: Docker runtime only."""
        if self.rt.name != "docker":
            return
        from agent.observe import Observer

        obs = Observer(getattr(self.rt, "docker", None), self.log, self.cfg.metrics_listen)
        if await obs.start():
            self.session.metrics_endpoint = obs.advertised
        self.reporter.usage = lambda: obs.usage
        self.reporter.on_sent = obs.sent
        self.observer = obs

    def _sample_usage(self) -> None:
        """Start a usage sample in the background unless the last one still runs: the heartbeat never
        waits for the engine (the snapshot carries the latest finished sample, one tick old)."""
        if self._sampling is not None and not self._sampling.done():
            return
        doc = self.state.doc
        services = {t.taskId: t.serviceName for t in doc.tasks} if doc else {}
        self._sampling = asyncio.create_task(self._sample(services))

    async def _sample(self, services: dict[str, str | None]) -> None:
        try:
            await self.observer.sample(self.state.actual, services)
        except Exception as e:  # noqa: BLE001 - usage is best effort
            self.log.warning("usage sample failed", error=f"{type(e).__name__}: {e}")

    async def _start_metadata(self) -> None:
        """Serve the task metadata endpoint v4 (Docker runtime only), before any container is created."""
        if self.rt.name != "docker":  # the hollow runtime never loads aiodocker (or aiohttp)
            return
        from agent.docker_runtime import DockerRuntime
        from agent.metadata_server import MetadataServer, load_secret

        if not isinstance(self.rt, DockerRuntime):
            return
        state_dir = self.cfg.state_path(self.node_id)
        try:
            secret = load_secret(state_dir)
        except OSError as e:
            self.log.warning("cannot keep the metadata token secret in the state directory; URIs of this agent's "
                             "containers stop working when it restarts", state_dir=str(state_dir), error=str(e),
                             hint="give a writable --state-dir")
            secret = os.urandom(32)
        srv = MetadataServer(self.state, self.rt.docker, self.cfg.cluster, secret, self.cfg.metadata_port, self.log,
                             attributes=self.cfg.attributes)
        if await srv.start():
            self.metadata = srv
            self.rt.metadata_uri = srv.uri

    async def shutdown(self) -> None:
        """Publish offline presence, disconnect; containers keep running (a restart adopts them)."""
        await self.session.goodbye()
        if self.metadata is not None:
            await self.metadata.close()
        if self.observer is not None:
            if self._sampling is not None:
                self._sampling.cancel()
            await self.observer.close()
        if self.requests is not None:
            await self.requests.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, self.executor.close(), return_exceptions=True)
        await self.rt.close()
        self.log.info("agent stopped; containers left running")


def make_agents(cfg: AgentConfig) -> list[Agent]:
    if cfg.runtime == "hollow":
        from agent.hollow import HollowRuntime

        ids = [cfg.node_id] if cfg.hollow_count <= 1 else [f"{cfg.node_id}-{i}" for i in range(cfg.hollow_count)]
        return [Agent(cfg, nid, HollowRuntime()) for nid in ids]
    if cfg.runtime != "docker":
        raise ValueError(f"unknown runtime {cfg.runtime!r}; use docker or hollow")
    from agent.docker_runtime import DockerRuntime

    seal_key = load_seal_key(cfg.state_path(cfg.node_id))
    return [Agent(cfg, cfg.node_id, DockerRuntime(cfg.docker_url, cfg.image_pull_behavior), seal_key)]


async def run_async(cfg: AgentConfig, stop: asyncio.Event | None = None) -> int:
    lg = log.get("agent", node=cfg.node_id, cluster=cfg.cluster)
    if cfg.join_url and not cfg.mqtt_credentials:
        from agent.join import JoinError, credentials

        try:
            path = credentials(cfg.state_path(cfg.node_id), cfg.join_url, cfg.join_token, cfg.cluster, cfg.node_id,
                               cfg.join_ca, cfg.join_fingerprint)
        except (JoinError, ValueError, OSError) as e:
            lg.error("cannot join", error=str(e))
            return 1
        lg.info("broker credential from the join", credentials=str(path))
        cfg.mqtt_credentials = str(path)
    try:
        load_credentials(cfg.mqtt_credentials)
        for url in broker_urls(cfg.mqtt_url):
            check_ca(url, cfg.mqtt_ca)
        agents = make_agents(cfg)
    except (ValueError, OSError) as e:
        lg.error("invalid configuration", error=str(e))
        return 2
    if cfg.runtime == "hollow":
        lg.warning("!!! HOLLOW RUNTIME: NO CONTAINERS ARE RUN. For control-plane benchmarks only !!!",
                   agents=len(agents))
    else:  # one agent per node id (agent.claim): look before taking the node's client id
        from agent.claim import ClaimError, claim

        try:
            await claim(cfg.state_path(cfg.node_id), cfg.mqtt_url, cfg.cluster, cfg.node_id, agents[0].boot_id,
                        load_credentials(cfg.mqtt_credentials), cfg.mqtt_ca, lg)
        except ClaimError as e:
            lg.error("refused", error=str(e))
            return 1
        except (aiomqtt.MqttError, OSError) as e:  # the broker unreachable: the session's own backoff handles it
            lg.warning("could not read the node's presence before connecting", error=str(e))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    starters = [asyncio.create_task(a.start()) for a in agents]
    collector = asyncio.create_task(gcpolicy.collect_middle())
    await stop.wait()
    lg.info("shutting down", signal=True)
    collector.cancel()
    for s in starters:
        s.cancel()
    await asyncio.gather(*starters, return_exceptions=True)
    await asyncio.gather(*(a.shutdown() for a in agents), return_exceptions=True)
    return 0


def run(cfg: AgentConfig) -> int:
    """Run the agent until SIGTERM/SIGINT. Blocking; returns the process exit code."""
    log.configure(cfg.log_level, json=cfg.log_json)
    gcpolicy.tune()  # as the orchestrator's: a process of many hollow agents is a large long-lived heap
    try:
        return asyncio.run(run_async(cfg))
    except KeyboardInterrupt:
        return 130


# ---- CLI -------------------------------------------------------------------------------------
def _parse_attributes(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {v!r}", ctx=ctx, param=param)
        out[key.strip()] = val.strip()
    return out


@click.command("agent")
@click.option("--node-id", required=True, help="This node's id (unique in the cluster).")
@click.option("--cluster", default="default", show_default=True, help="Cluster to join.")
@click.option("--mqtt", "mqtt_url", default=lambda: os.environ.get("DOCKYARD_MQTT", "mqtt://127.0.0.1:1883"),
              show_default="env DOCKYARD_MQTT or mqtt://127.0.0.1:1883",
              help="MQTT broker URL; several, comma-separated, for a broker pair (the next one when one is gone).")
@click.option("--mqtt-ca", default=lambda: os.environ.get("DOCKYARD_MQTT_CA"), metavar="FILE",
              show_default="env DOCKYARD_MQTT_CA",
              help="CA certificate that an mqtts:// broker's certificate must be signed by (default: the system's).")
@click.option("--mqtt-credentials", default=lambda: os.environ.get("DOCKYARD_MQTT_CREDENTIALS"), metavar="FILE",
              show_default="env DOCKYARD_MQTT_CREDENTIALS",
              help="This node's broker login: the file `dockyard node join NODE -o FILE` wrote (docs/security.md).")
@click.option("--join", "join_url", default=lambda: os.environ.get("DOCKYARD_JOIN"), metavar="URL",
              help="https://ORCHESTRATOR:PORT: exchange --token for this node's broker credential on the first start "
                   "(kept in the state directory, reused after) [env DOCKYARD_JOIN].")
@click.option("--token", "join_token", default=lambda: os.environ.get("DOCKYARD_JOIN_TOKEN"), metavar="TOKEN",
              help="The one-time join token (dockyard node token create) [env DOCKYARD_JOIN_TOKEN].")
@click.option("--join-ca", default=None, metavar="FILE", help="The CA the orchestrator's certificate is signed by.")
@click.option("--join-fingerprint", default=None, metavar="sha256:HEX",
              help="Pin the orchestrator's certificate (printed with the token) instead of --join-ca.")
@click.option("--docker", "docker_url", default="unix:///var/run/docker.sock", show_default=True, help="Docker engine URL.")
@click.option("--attribute", "attributes", multiple=True, callback=_parse_attributes, metavar="KEY=VALUE",
              help="Custom node attribute for placement constraints (repeatable).")
@click.option("--runtime", type=click.Choice(["docker", "hollow"]), default="docker", show_default=True,
              help="hollow runs NO containers (control-plane benchmarks only).")
@click.option("--hollow-count", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --runtime hollow: agents in this process (node ids <node-id>-<i>).")
@click.option("--fargate", is_flag=True, help="Also offer the FARGATE capacity pool.")
@click.option("--status-interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between full status snapshots (with no heartbeats, the node is declared lost after 3 missed).")
@click.option("--heartbeat-interval", type=click.FloatRange(min=0), default=1.5, show_default=True,
              help="At most this many seconds between light heartbeats (a few bytes each; the node is declared "
                   "lost after 2 missed, node-lost seconds at least); 0: none, the snapshots are the heartbeat.")
@click.option("--relist-interval", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds between level-triggered container re-lists (at status ticks).")
@click.option("--image-pull-behavior", type=click.Choice(["default", "always", "once", "prefer-cached"]),
              default="default", show_default=True, help="As ECS_IMAGE_PULL_BEHAVIOR.")
@click.option("--load-balancer", is_flag=True,
              help="Also serve the cluster's load balancers: run and drive a local HAProxy (docs/load-balancing.md).")
@click.option("--lb-dir", metavar="DIR", help="HAProxy's files (config, sockets).  [default: <state dir>/lb]")
@click.option("--lb-bind", default="0.0.0.0", show_default=True, help="Address the listeners bind to.")
@click.option("--advertise-address", metavar="IP",
              help="Where load balancers reach this node's host ports.  [default: the source address of the broker connection]")
@click.option("--metadata-port", type=click.IntRange(0, 65535), default=METADATA_PORT, show_default=True,
              help="Port of the task metadata endpoint v4 served to containers (0: not served).")
@click.option("--state-dir", default=lambda: os.environ.get("DOCKYARD_AGENT_STATE_DIR"),
              show_default=f"env DOCKYARD_AGENT_STATE_DIR or {DEFAULT_STATE_ROOT}/<node-id>",
              help="Directory the agent keeps across restarts (the metadata token secret, the seal key).")
@click.option("--metrics-listen", metavar="HOST:PORT",
              help="Serve Prometheus metrics (the agent's and its containers' usage) at http://HOST:PORT/metrics.")
@click.option("--usage-sampling/--no-usage-sampling", default=True, show_default=True,
              help="Sample container cpu/memory at each status tick (for /metrics, dockyard top, utilization).")
@click.option("--task-cleanup-wait", type=click.FloatRange(min=0), default=DEFAULT_TASK_CLEANUP_WAIT, show_default=True,
              metavar="SECONDS",
              help="Keep a stopped task's containers (and their logs) this long before removing them "
                   "(ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION; 0: at once).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@logflags.format_options
@click.pass_context
def agent_command(ctx: click.Context, node_id: str, cluster: str, mqtt_url: str, mqtt_ca: str | None,
                  mqtt_credentials: str | None, join_url: str | None, join_token: str | None, join_ca: str | None,
                  join_fingerprint: str | None,
                  docker_url: str,
                  attributes: dict[str, str], runtime: str, hollow_count: int, fargate: bool, status_interval: float,
                  heartbeat_interval: float, relist_interval: float, image_pull_behavior: str, load_balancer: bool, lb_dir: str | None,
                  lb_bind: str, advertise_address: str | None, metadata_port: int, state_dir: str | None,
                  metrics_listen: str | None, usage_sampling: bool, task_cleanup_wait: float, log_level: str,
                  log_json: bool) -> None:
    """Run the dockyard agent on this host: drive the local Docker engine as the orchestrator asks."""
    cfg = AgentConfig(
        node_id=node_id, cluster=cluster, mqtt_url=mqtt_url, mqtt_credentials=mqtt_credentials, mqtt_ca=mqtt_ca,
        join_url=join_url, join_token=join_token, join_ca=join_ca, join_fingerprint=join_fingerprint,
        docker_url=docker_url,
        attributes=attributes,
        runtime=runtime, hollow_count=hollow_count, capacity_providers=["EC2", "FARGATE"] if fargate else ["EC2"],
        status_interval=status_interval, heartbeat_interval=heartbeat_interval, relist_interval=relist_interval,
        image_pull_behavior=image_pull_behavior,
        log_level=log_level, log_json=log_json, load_balancer=load_balancer, lb_dir=lb_dir, lb_bind=lb_bind,
        advertise_address=advertise_address, metadata_port=metadata_port, state_dir=state_dir,
        metrics_listen=metrics_listen, usage_sampling=usage_sampling, task_cleanup_wait=task_cleanup_wait,
    )
    ctx.exit(run(cfg))


if __name__ == "__main__":  # pragma: no cover
    agent_command()
