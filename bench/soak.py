#!/usr/bin/env python3
"""Soak: N minutes of random churn on the 3-host test bed under the invariant checker.

    .venv/bin/python bench/soak.py [--minutes 30] [--seed S] [--interval 4] [--store sqlite|postgres]

Needs root (the multi-host test bed, tests/integration/testbed.py). One orchestrator, one agent
per host, two services (web 6, api 3). After a warm-up (--warmup seconds, default 60 or a tenth
of the run), every --interval seconds one random action: scale a service (1-8), deploy a new
revision, kill a random container behind the agent's back (`docker kill`), SIGKILL and restart
an agent, stop a random task through the API. The invariant checker (tests/integration/
invariants.py) samples the API and every host's dockerd twice a second throughout. At the end the
services go back to their counts and the cluster must converge within 120 s; then the final
checks (nothing lost, every 2xx write there, no orphan container, network or volume).
--store postgres: the orchestrator on a PostgreSQL 15 the soak starts (the default under
DOCKYARD_TEST_STORE=postgresql, so tests/integration/test_soak.py runs on the harness's store).

Figures: minutes, actions, violations (target 0), samples, convergence_seconds,
orchestrator_rss_mb_start/end and agent_rss_mb_start/end (after the warm-up; the agents'
largest), orchestrator_rss_growth_percent and agent_rss_growth_percent (target <= 10; only
host 2's and 3's agents are restarted, so host 1's lives the whole run and is the agent
figure), leaked (orphans: target 0). Whether the RSS levels off: rss_mb_series (every tenth of the
run, at least 30 s) and orchestrator_rss_growth_first/second_half_percent.
"""
from __future__ import annotations

import argparse
import os
import random
import time

from _common import Bench, CannotMeasure, log, main, proc_status
from test_chaos import manifest  # the scenarios' service (150/50, proven after 1 s): the same one soaks


def rss_mb(pid: int) -> float:
    try:
        return proc_status(pid)["VmRSS"] / 1024
    except (OSError, KeyError):
        return float("nan")


def first_agent(agents: dict[str, float]) -> str:
    """Host 1's agent (the one never restarted), by its node id's suffix."""
    return next((n for n in agents if n.endswith("-h1")), next(iter(agents)))


def run(bench: Bench) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--interval", type=float, default=4.0, help="seconds between random actions")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before the churn (default: 60, or 10%% of the run)")
    ap.add_argument("--store", choices=["sqlite", "postgres"],
                    default="postgres" if os.environ.get("DOCKYARD_TEST_STORE", "").lower() == "postgresql" else "sqlite",
                    help="the orchestrator's store: a SQLite file, or a PostgreSQL 15 the soak starts")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise CannotMeasure("the test bed needs root (network namespaces, one dockerd per host)")
    from invariants import Checker  # tests/integration (on sys.path via _common)
    from testbed import Testbed

    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rnd = random.Random(seed)
    log(f"seed {seed}")
    env = bench.env
    if args.store == "postgres":
        from pgserver import PgServer

        pg = PgServer()
        if pg.missing():
            raise CannotMeasure(pg.missing() or "")
        bench.extra_cleanups.append(pg.stop)
        env.store = pg.start().database()
        log(f"store: PostgreSQL 15 on port {pg.port}")
    base = {"web": 6, "api": 3}
    marks = {"web": 0, "api": 0}
    with Testbed(3) as tb:
        tb.attach(env)
        env.start_orchestrator(node_lost_seconds=3)
        for k in tb.hosts:
            tb.start_agent(env, k)
        for name, n in base.items():
            env.cli("apply", "-f", str(bench.manifest(manifest(name, n, "m0"))))
        env.wait_for(lambda: len(env.running_tasks()) == sum(base.values()), timeout=120, message="services RUNNING")
        warmup = args.warmup if args.warmup is not None else min(60.0, 6.0 * args.minutes)
        log(f"warm-up {warmup:.0f}s")
        time.sleep(warmup)
        opid = env.orchestrator.popen.pid
        agent_pids = {n: p.popen.pid for n, p in env.agents.items()}
        o_start = rss_mb(opid)
        a_start = {n: rss_mb(p) for n, p in agent_pids.items()}
        log(f"RSS after warm-up: orchestrator {o_start:.1f} MB, agents {a_start}")
        actions: dict[str, int] = {}
        churn_start = time.monotonic()
        deadline = churn_start + 60 * args.minutes
        # RSS every tenth of the run (at least 30 s): does it level off, or keep rising?
        rss_every = max(30.0, 6.0 * args.minutes)
        next_rss = churn_start + rss_every
        series: list[tuple[float, float, float]] = [(0.0, o_start, a_start[first_agent(a_start)])]
        with Checker(env, [h.docker_url for h in tb.hosts.values()]) as chk:
            while time.monotonic() < deadline:
                action = rnd.choice(["scale", "deploy", "kill-container", "restart-agent", "stop-task"])
                try:
                    if action == "scale":
                        name = rnd.choice(list(base))
                        n = rnd.randint(1, 8)
                        env.cli("scale", name, str(n))
                        chk.wrote(f"{name} desiredCount {n} (or a later one)", lambda s, name=name: name in s.services)
                    elif action == "deploy":
                        name = rnd.choice(list(base))
                        marks[name] += 1
                        count = env.service(name)["desiredCount"]
                        env.cli("apply", "-f", str(bench.manifest(manifest(name, count, f"m{marks[name]}"))))
                    elif action == "kill-container":
                        k = rnd.choice(list(tb.hosts))
                        running = tb.containers(env, k, all=False)
                        if running:
                            tb.host(k).docker("kill", rnd.choice(running)["ID"], check=False)
                    elif action == "restart-agent":  # hosts 2-3: host 1's agent lives the whole run (RSS)
                        k = rnd.choice([2, 3])
                        env.stop_agent(tb.node_id(env, k), kill=True)
                        tb.start_agent(env, k)
                    else:
                        tasks = env.running_tasks()
                        if tasks:
                            t = rnd.choice(tasks)
                            env.api.post(f"/v1/clusters/{env.cluster}/tasks/{t['taskId']}/stop",
                                         headers=env.api_headers, json={"reason": "soak"})
                except Exception as e:  # noqa: BLE001 - an action failing is reported, the soak goes on
                    log(f"action {action} failed: {e}")
                    actions["failed"] = actions.get("failed", 0) + 1
                actions[action] = actions.get(action, 0) + 1
                time.sleep(args.interval * rnd.uniform(0.5, 1.5))
                if time.monotonic() >= next_rss:
                    next_rss += rss_every
                    point = ((time.monotonic() - churn_start) / 60, rss_mb(opid),
                             rss_mb(agent_pids[first_agent(a_start)]))
                    series.append(point)
                    log(f"RSS at {point[0]:.1f} min: orchestrator {point[1]:.1f} MB, host 1's agent {point[2]:.1f} MB")
            log(f"churn over: {actions}; back to {base} and converging")
            for name, n in base.items():
                env.cli("scale", name, str(n))
                chk.wrote(f"{name} desiredCount {n}", lambda s, name=name, n=n: s.services[name]["desiredCount"] == n)
            chk.fault_ended()

            def converged() -> bool:
                tasks = [t for t in env.tasks() if t["lastStatus"] != "STOPPED"]
                if len(tasks) != sum(base.values()) or any(t["lastStatus"] != "RUNNING" for t in tasks):
                    return False
                return sum(len(tb.containers(env, k, all=False)) for k in tb.hosts) == sum(base.values())
            chk.wait_converged(converged, 120, "the base counts RUNNING")
        final = chk.final()
        o_end = rss_mb(opid)
        a_end = {n: rss_mb(p) for n, p in agent_pids.items()}
        series.append(((time.monotonic() - churn_start) / 60, o_end, a_end[first_agent(a_start)]))
        lived = [n for n in a_start if env.agents.get(n) and env.agents[n].popen.pid == agent_pids[n]]
        log(chk.report())
        for v in [*chk.tracker.violations, *final]:
            log(f"VIOLATION {v}")
        bench.figure("seed", seed)
        bench.figure("minutes", args.minutes)
        bench.figure("store", args.store)
        bench.figure("actions", sum(v for k, v in actions.items() if k != "failed"))
        bench.figure("actions_failed", actions.get("failed", 0))
        bench.figure("samples", chk.tracker.samples)
        bench.figure("violations", len(chk.tracker.violations) + len([v for v in final if v.kind != "orphan"]))
        bench.figure("leaked", len([v for v in final if v.kind == "orphan"]))
        bench.figure("convergence_seconds", chk.convergence or float("nan"))
        bench.figure("orchestrator_rss_mb_start", o_start)
        bench.figure("orchestrator_rss_mb_end", o_end)
        bench.figure("orchestrator_rss_growth_percent", 100 * (o_end / o_start - 1))
        # Levelling off: the growth over the churn's second half against its first half.
        mid = series[len(series) // 2][1] if len(series) >= 3 else float("nan")
        bench.figure("orchestrator_rss_growth_first_half_percent", 100 * (mid / o_start - 1))
        bench.figure("orchestrator_rss_growth_second_half_percent", 100 * (series[-1][1] / mid - 1))
        bench.figure("rss_mb_series", " ".join(f"{m:.1f}min:{o:.1f}/{a:.1f}" for m, o, a in series)
                     + " (orchestrator/host 1's agent)")
        if lived:
            start, end = max(a_start[n] for n in lived), max(a_end[n] for n in lived)
            bench.figure("agent_rss_mb_start", start)
            bench.figure("agent_rss_mb_end", end)
            bench.figure("agent_rss_growth_percent", 100 * (end / start - 1))
        else:
            bench.figure("agent_rss_growth_percent", "n/a (every agent was restarted during the run)")
        bench.new_env()  # cleanup while the bed is still up


if __name__ == "__main__":
    main(run, "soak")
