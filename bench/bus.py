#!/usr/bin/env python3
"""Bus: desired-document -> agent acknowledgement latency, and the agent's idle cost.

    .venv/bin/python bench/bus.py [--docs 300] [--tasks 50] [--gap 0.05] [--idle-seconds 30]

One real agent (Docker runtime, local engine, its own cluster, a private Mosquitto); no
orchestrator: this script plays it, publishing DesiredDocs (retained, QoS 1, as the
orchestrator does) straight to the agent's `desired` topic with aiomqtt (TCP_NODELAY).

1. A document with --tasks busybox httpd tasks; wait until the agent reports them RUNNING.
2. --docs more documents, one at a time, --gap seconds after the previous acknowledgement:
   each holds the running tasks plus one new task (desiredStatus STOPPED: a change the agent
   must validate, but no container work). Latency = from just before the publish to the
   arrival of the agent's StatusDoc "update" carrying that observedGeneration (the
   acknowledgement). The agent keeps its status ticks (5 s) meanwhile.
3. The peers, the MQTT floor: the same documents, same gap, same broker, answered by a process
   that does nothing but echo the generation, QoS 1 both ways: (a) aiomqtt on both sides, as the
   agent; (b) raw blocking sockets on both sides (bench/_rawmqtt.py: no client library, no
   event loop), the least any client pays on this machine.
4. Idle: with the tasks' containers running, the agent's RSS (VmRSS, /proc) and CPU% (scheduler
   time over --idle-seconds, of one core) after a 5 s settle. Two peers over the same window
   give the machine's floor: the echo peer (an idle aiomqtt client as it comes: a 1 s
   housekeeping timer) and a bare asyncio loop waking every 5 s (the agent's status period, the
   least any agent with a heartbeat does). On a VM each wake-up of an idle process costs
   milliseconds of CPU, so idle CPU is mostly wake-ups per second.

Figures: ack_p50_ms (target <= 2), ack_p99_ms, ack_max_ms, echo_floor_p50_ms,
echo_floor_p99_ms, ack/floor_p50, raw_floor_p50_ms, raw_floor_p99_ms, ack/raw_floor_p50, agent_idle_rss_mb (target <= 60), agent_peak_rss_mb,
agent_idle_cpu_percent (target <= 1; it samples its containers' usage every status interval),
aiomqtt_idle_cpu_percent (the echo peer), with --no-sampling-peer also
agent_idle_cpu_no_sampling_percent and sampling/no_sampling_cpu (target <= 1.5), and the same between two
fresh agents: agent_idle_cpu_fresh_sampling_percent and fresh_sampling/no_sampling_cpu,
tick_floor_cpu_percent (the bare loop waking every 5 s).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid

from _common import IMAGE, Bench, CannotMeasure, log, main, percentile, proc_cpu_seconds, proc_status

from dockyard.ecs import TaskDefinitionSpec
import _rawmqtt
from dockyard.mqtt import make_client, parse_url
from dockyard.wire import DesiredDoc, DesiredTask, StatusDoc, node_topic


HEALTH_CHECK = False  # --health-check


def taskdef() -> TaskDefinitionSpec:
    c = {"name": "web", "image": IMAGE, "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
         "memory": 32, "cpu": 16, "stopTimeout": 2}
    if HEALTH_CHECK:
        c["healthCheck"] = {"command": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"],
                            "interval": 5, "timeout": 2, "retries": 3}
    return TaskDefinitionSpec.model_validate({"family": "bbus", "containerDefinitions": [c]})


async def roundtrips(client, topic: str, payloads, replies: asyncio.Queue, gap: float) -> list[float]:
    """Publish each payload (retained, QoS 1) and wait for the matching reply; latencies in ms."""
    lat: list[float] = []
    for key, payload in payloads:
        while not replies.empty():
            replies.get_nowait()
        t0 = time.perf_counter()
        await client.publish(topic, payload, qos=1, retain=True)
        deadline = t0 + 5.0
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise CannotMeasure(f"no reply to document {key} within 5 s on {topic}")
            try:
                got, t1 = await asyncio.wait_for(replies.get(), left)
            except asyncio.TimeoutError:
                continue
            if got == key:
                break
        lat.append((t1 - t0) * 1000)
        await asyncio.sleep(gap)
    return lat


async def measure(bench: Bench, node_id: str, n_tasks: int, n_docs: int, gap: float) -> tuple[list[float], list[float]]:
    """(agent acknowledgement latencies, echo-peer latencies) in ms."""
    env = bench.env
    cluster = env.cluster
    td = taskdef()

    def task(status: str = "RUNNING") -> DesiredTask:
        return DesiredTask(taskId=uuid.uuid4().hex, family="bbus", revision=1, desiredStatus=status, taskDefinition=td)

    tasks = [task() for _ in range(n_tasks)]
    t_desired = node_topic(cluster, node_id, "desired")
    t_status = node_topic(cluster, node_id, "status")
    t_presence = node_topic(cluster, node_id, "presence")
    t_echo_in, t_echo_out = f"bench/{cluster}/echo/in", f"bench/{cluster}/echo/out"
    acks: asyncio.Queue = asyncio.Queue()
    echoes: asyncio.Queue = asyncio.Queue()
    running = 0
    online = asyncio.Event()
    echo_ready = asyncio.Event()
    all_running = asyncio.Event()

    async with make_client(env.mqtt_url, f"dockyard-bench-bus-{uuid.uuid4().hex[:8]}") as client:
        for t in (t_status, t_presence, t_echo_out):
            await client.subscribe(t, qos=1)

        async def reader() -> None:
            nonlocal running
            async for msg in client.messages:
                now = time.perf_counter()
                topic = str(msg.topic)
                if topic == t_echo_out:
                    echo_ready.set()
                    await echoes.put((int(msg.payload), now))
                    continue
                if topic == t_presence:
                    if msg.payload and json.loads(msg.payload).get("state") == "online":
                        online.set()
                    continue
                st = StatusDoc.model_validate_json(msg.payload)
                if st.kind == "update":
                    await acks.put((st.observedGeneration, now))
                if st.kind == "snapshot":
                    running = sum(r.lastStatus == "RUNNING" for r in st.tasks)
                    if running == n_tasks:
                        all_running.set()

        rd = asyncio.create_task(reader())
        try:
            await asyncio.wait_for(online.wait(), 30)
            doc = DesiredDoc(cluster=cluster, nodeId=node_id, epoch=1, generation=1, tasks=tasks)
            await client.publish(t_desired, doc.model_dump_json(), qos=1, retain=True)
            log(f"published generation 1 with {n_tasks} tasks; waiting for them RUNNING")
            try:
                await asyncio.wait_for(all_running.wait(), 180)
            except asyncio.TimeoutError:
                raise CannotMeasure(f"the agent ran {running} of {n_tasks} tasks after 180 s") from None
            await asyncio.sleep(1.0)
            # Each document: the running tasks + one new task (desiredStatus STOPPED, so the agent
            # validates a new entry but starts nothing): one change per document, as in production.
            docs = [(g, DesiredDoc(cluster=cluster, nodeId=node_id, epoch=1, generation=g,
                                   tasks=tasks + [task("STOPPED")]).model_dump_json()) for g in range(2, n_docs + 2)]
            log(f"{n_tasks} tasks RUNNING; timing {n_docs} documents ({len(docs[0][1])} bytes each)")
            agent_lat = await roundtrips(client, t_desired, docs, acks, gap)

            # The peer: the same documents to a process that answers each at once (the MQTT floor).
            deadline = time.monotonic() + 30
            while not echo_ready.is_set():
                await client.publish(t_echo_in, b"0", qos=1)
                try:
                    await asyncio.wait_for(echo_ready.wait(), 0.5)
                except asyncio.TimeoutError:
                    if time.monotonic() > deadline:
                        raise CannotMeasure("the echo peer did not answer") from None
            await asyncio.sleep(0.5)
            log(f"timing the echo peer with the same {n_docs} documents")
            echo_lat = await roundtrips(client, t_echo_in, docs, echoes, gap)
            await client.publish(t_echo_in, b"", qos=1, retain=True)
            return agent_lat, echo_lat, [(g, p.encode()) for g, p in docs]
        finally:
            rd.cancel()


# The least an agent with a heartbeat does: wake every 5 s (the default --status-interval).
TICK_PEER = """
import asyncio
async def main():
    while True:
        await asyncio.sleep(5.0)
asyncio.run(main())
"""


async def echo_peer(url: str, topic_in: str, topic_out: str) -> None:
    """The floor: an aiomqtt client (TCP_NODELAY, QoS 1) that answers every document at once with
    its generation, found by a byte search (no JSON parsing): the transport cost alone."""
    import re

    gen_re = re.compile(rb'"generation":(\d+)')
    async with make_client(url, f"dockyard-bench-echo-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(topic_in, qos=1)
        async for msg in client.messages:
            p = bytes(msg.payload or b"")
            m = gen_re.search(p[:400])
            await client.publish(topic_out, m.group(1) if m else b"0", qos=1)


def run(bench: Bench) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--heartbeat-interval", type=float, default=None,
                    help="the agent's --heartbeat-interval (default: its own; 0: no light heartbeats)")
    ap.add_argument("--gap", type=float, default=0.05, help="seconds between one acknowledgement and the next document")
    ap.add_argument("--health-check", action="store_true",
                    help="the containers have a Docker health check (every 5 s: exec events the agent sees)")
    ap.add_argument("--no-sampling-peer", action="store_true",
                    help="then restart the agent with --no-usage-sampling and measure its idle CPU again")
    args = ap.parse_args()
    global HEALTH_CHECK
    HEALTH_CHECK = args.health_check
    env = bench.env
    node_id = f"{env.cluster}-n1"
    beat = {} if args.heartbeat_interval is None else {"heartbeat_interval": args.heartbeat_interval}
    proc = env.start_agent(node_id=node_id, **beat)  # no orchestrator: returns at once
    echo = bench.spawn("echo-peer", [sys.executable, __file__, "--echo-peer", env.mqtt_url,
                                     f"bench/{env.cluster}/echo/in", f"bench/{env.cluster}/echo/out"])
    lat, floor, docs = asyncio.run(measure(bench, node_id, args.tasks, args.docs, args.gap))
    bench.stop(echo)
    # The machine's floor: the same documents, gap and broker, no client library on either side.
    b = parse_url(env.mqtt_url)
    t_in, t_out = f"bench/{env.cluster}/raw/in", f"bench/{env.cluster}/raw/out"
    raw_echo = bench.spawn("raw-echo", [sys.executable, _rawmqtt.__file__, "echo", b.host, str(b.port), t_in, t_out])
    log(f"timing the raw-socket echo with the same {len(docs)} documents")
    raw = _rawmqtt.roundtrips(b.host, b.port, t_in, t_out, docs, args.gap)
    bench.stop(raw_echo)
    echo = bench.spawn("echo-peer", [sys.executable, __file__, "--echo-peer", env.mqtt_url,
                                     f"bench/{env.cluster}/echo/in", f"bench/{env.cluster}/echo/out"])
    if proc.popen.poll() is not None:
        raise CannotMeasure("the agent exited")
    pid = proc.popen.pid
    log(f"acks: p50 {percentile(lat, 50):.2f} ms, p99 {percentile(lat, 99):.2f} ms; idle settle 5 s")
    tick = bench.spawn("tick-peer", [sys.executable, "-c", TICK_PEER])
    time.sleep(5.0)
    pids = (pid, echo.pid, tick.pid)
    c0, w0 = [proc_cpu_seconds(p) for p in pids], time.monotonic()
    time.sleep(args.idle_seconds)
    c1, w1 = [proc_cpu_seconds(p) for p in pids], time.monotonic()
    bench.stop(echo)
    bench.stop(tick)
    cpu = [(b - a) / (w1 - w0) * 100 for a, b in zip(c0, c1)]
    st = proc_status(pid)
    running = len(env.containers(all=False))
    if running != args.tasks:
        raise CannotMeasure(f"{running} containers running during the idle measurement, expected {args.tasks}")
    bench.figure("ack_p50_ms", percentile(lat, 50))
    bench.figure("ack_p99_ms", percentile(lat, 99))
    bench.figure("ack_max_ms", max(lat))
    bench.figure("echo_floor_p50_ms", percentile(floor, 50))
    bench.figure("echo_floor_p99_ms", percentile(floor, 99))
    bench.figure("ack/floor_p50", percentile(lat, 50) / percentile(floor, 50))
    bench.figure("raw_floor_p50_ms", percentile(raw, 50))
    bench.figure("raw_floor_p99_ms", percentile(raw, 99))
    bench.figure("ack/raw_floor_p50", percentile(lat, 50) / percentile(raw, 50))
    bench.figure("agent_idle_rss_mb", st["VmRSS"] / 1024)
    bench.figure("agent_peak_rss_mb", st["VmHWM"] / 1024)
    bench.figure("agent_idle_cpu_percent", cpu[0])
    bench.figure("aiomqtt_idle_cpu_percent", cpu[1])
    bench.figure("tick_floor_cpu_percent", cpu[2])
    if args.no_sampling_peer:
        # The same agent without usage sampling, on the same containers (it adopts them): what
        # sampling 50 containers every status interval costs.
        bench.figure("agent_idle_cpu_no_sampling_percent", (off := idle_restarted(bench, node_id, args, False)))
        bench.figure("sampling/no_sampling_cpu", cpu[0] / off if off else float("nan"))
        # The same comparison between two fresh agents: the first figure is of an agent that has just
        # applied --docs documents (more memory, more objects for the collector), the peer's of a fresh one.
        bench.figure("agent_idle_cpu_fresh_sampling_percent", (on := idle_restarted(bench, node_id, args, True)))
        bench.figure("fresh_sampling/no_sampling_cpu", on / off if off else float("nan"))


def idle_restarted(bench: Bench, node_id: str, args, sampling: bool) -> float:
    """The idle CPU of the agent restarted on the same containers (it adopts them), with or without sampling."""
    env = bench.env
    env.stop_agent(node_id)
    proc = env.start_agent(node_id=node_id, no_usage_sampling=not sampling)
    log(f"agent restarted {'with' if sampling else 'with --no-usage-sampling'}; settle 10 s")
    time.sleep(10.0)
    if len(env.containers(all=False)) != args.tasks:
        raise CannotMeasure("the restarted agent did not keep the containers")
    c0, w0 = proc_cpu_seconds(proc.popen.pid), time.monotonic()
    time.sleep(args.idle_seconds)
    return (proc_cpu_seconds(proc.popen.pid) - c0) / (time.monotonic() - w0) * 100


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--echo-peer":
        try:
            asyncio.run(echo_peer(*sys.argv[2:]))
        except KeyboardInterrupt:
            pass
        sys.exit(0)
    main(run, "bus")
