"""Services behind a real HAProxy driven by the agent (issue 11): health-gated registration,
drain before SIGTERM, zero failed requests while tasks come and go. Real Mosquitto, dockerd and
HAProxy; the load goes to 127.0.0.1 only, bounded in time, and stops by itself."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from harness import IMAGE, docker, free_port
from loadgen import Load

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # test_lb_plan's shared fixtures



def web_manifest(tg_port: int, rev: str, count: int, extra: str = "", deploy: str = "") -> str:
    return f"""
apiVersion: dockyard/v1
kind: TargetGroup
metadata: {{name: web}}
spec:
  protocol: HTTP
  deregistrationDelay: 20
  healthCheck: {{path: /health, intervalSeconds: 5, timeoutSeconds: 2, healthyThresholdCount: 2, unhealthyThresholdCount: 2}}
---
apiVersion: dockyard/v1
kind: LoadBalancer
metadata: {{name: front}}
spec:
  listeners:
    - port: {tg_port}
      protocol: HTTP
      defaultActions: [{{type: forward, targetGroupName: web}}]
---
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - name: web
      image: {IMAGE}
      memory: 32
      stopTimeout: 2
      command: ["sh", "-c", "mkdir -p /www; echo {rev} > /www/index.html; echo ok > /www/health; exec httpd -f -p 8080 -h /www"]
      portMappings: [{{containerPort: 8080}}]
{extra}
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: web}}
spec:
  taskDefinition: web
  desiredCount: {count}
  loadBalancers: [{{targetGroupName: web, containerName: web, containerPort: 8080}}]
  deploymentConfiguration: {{maximumPercent: 200, minimumHealthyPercent: 100, minimumHealthyTimeSeconds: 2, bakeTimeSeconds: 0{deploy}}}
"""


def _kill_haproxy(lb_dir: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((lb_dir / "haproxy.pid").read_text().split()[0]), signal.SIGKILL)


@pytest.fixture
def lb_env(dockyard_env, tmp_path):
    lb_dir = tmp_path / "lb"
    yield dockyard_env, lb_dir
    # The agent leaves HAProxy running on purpose (a restart adopts it): stop the agents first, or
    # a live LB agent brings HAProxy back after the kill and it outlives the test.
    for node_id in list(dockyard_env.agents):
        dockyard_env.stop_agent(node_id)
    _kill_haproxy(lb_dir)


def _healthy_targets(env, count: int):
    def check():
        tg = env.get(f"/v1/clusters/{env.cluster}/targetgroups/web")["targetGroup"]
        healthy = [t for t in tg["targets"] if t["health"] and all(h["state"] == "healthy" for h in t["health"].values())]
        return tg if len(healthy) == count and len(tg["targets"]) == count else None
    return check


@pytest.mark.slow
def test_rolling_deploy_scale_in_and_stop_behind_haproxy_drop_nothing(lb_env):
    env, lb_dir = lb_env
    port = free_port()
    env.start_orchestrator()
    env.start_agent(load_balancer=True, lb_dir=str(lb_dir), lb_bind="127.0.0.1")
    env.cli("apply", "-f", env.write_manifest(web_manifest(port, "rev1", 3)))
    env.wait_for(env.completed("web", "web:1"), timeout=90, message="first deployment COMPLETED")
    env.wait_for(_healthy_targets(env, 3), timeout=60, message="3 healthy targets")
    with Load(f"http://127.0.0.1:{port}/") as load:
        env.wait_for(lambda: sum(load.ok.values()) >= 20, timeout=20, message="traffic flowing")
        # A rolling deployment (200/100): new tasks must be healthy in HAProxy before old ones drain.
        env.cli("apply", "-f", env.write_manifest(web_manifest(port, "rev2", 3)))
        env.wait_for(env.completed("web", "web:2"), timeout=120, message="deployment COMPLETED")
        env.wait_for(_healthy_targets(env, 3), timeout=60, message="3 healthy rev2 targets")
        after_deploy = load.snapshot()
        # Scale in 3 -> 1: the two stopped tasks drain first.
        env.cli("scale", "web", "1")
        env.wait_for(lambda: len(env.running_tasks()) == 1 and _healthy_targets(env, 1)(), timeout=60, message="scaled in")
        # Stop the last task by hand while another comes up: the replacement takes over, nothing fails.
        (last,) = env.running_tasks()
        env.cli("scale", "web", "2")
        env.wait_for(_healthy_targets(env, 2), timeout=60, message="2 healthy targets")
        t0 = time.monotonic()
        env.cli("stop", last["taskId"])
        stopped = env.wait_for(lambda: (t := env.get(f"/v1/clusters/{env.cluster}/tasks/{last['taskId']}")["task"])
                               ["lastStatus"] == "STOPPED" and t, timeout=40, message="stopped task STOPPED")
        stop_seconds = time.monotonic() - t0
        env.wait_for(_healthy_targets(env, 2), timeout=60, message="replacement healthy")
        time.sleep(0)  # the load keeps running until the replacement serves
        env.wait_for(lambda: sum(load.ok.values()) >= sum(after_deploy.values()) + 40, timeout=20, message="more traffic")
    total = sum(load.ok.values()) + len(load.bad)
    print(f"\nLB: {total} requests, {len(load.bad)} failed; bodies {dict(load.ok)}; stop of a busy target -> "
          f"STOPPED in {stop_seconds:.2f} s")
    assert load.bad == [], load.bad[:10]
    assert after_deploy["rev1"] > 0 and after_deploy["rev2"] > 0  # both revisions served during the deploy
    assert load.ok["rev1"] == after_deploy["rev1"]  # only the new one after it
    assert stopped["stopCode"] == "UserInitiated"


@pytest.mark.slow
def test_killed_task_leaves_rotation_and_haproxy_comes_back(lb_env):
    env, lb_dir = lb_env
    port = free_port()
    env.start_orchestrator()
    env.start_agent(load_balancer=True, lb_dir=str(lb_dir), lb_bind="127.0.0.1")
    env.cli("apply", "-f", env.write_manifest(web_manifest(port, "rev1", 2)))
    env.wait_for(_healthy_targets(env, 2), timeout=60, message="2 healthy targets")
    with Load(f"http://127.0.0.1:{port}/") as load:
        env.wait_for(lambda: sum(load.ok.values()) >= 20, timeout=20, message="traffic flowing")
        victim = env.running_tasks()[0]
        cid = env.containers(all=False, task=victim["taskId"])[0]["ID"]
        before = len(load.bad)
        t0 = time.monotonic()
        docker("kill", "--signal", "KILL", cid)
        env.wait_for(lambda: all(t["taskId"] != victim["taskId"] for t in
                                 env.get(f"/v1/clusters/{env.cluster}/targetgroups/web")["targetGroup"]["targets"]),
                     timeout=10, message="killed task out of the target group")
        out_of_rotation = time.monotonic() - t0
        killed_failures = len(load.bad) - before
        env.wait_for(_healthy_targets(env, 2), timeout=60, message="replacement healthy")
        # HAProxy killed: the agent brings it back with the same targets.
        served = sum(load.ok.values())
        _kill_haproxy(lb_dir)
        t1 = time.monotonic()
        env.wait_for(lambda: sum(load.ok.values()) > served + 5, timeout=10, message="HAProxy serving again")
        back = time.monotonic() - t1
        bad_after_restart = len(load.bad)
        # The agent restarted: the same HAProxy keeps serving, nothing dropped.
        node = env.node_ids[0]
        env.stop_agent(node)
        env.start_agent(node_id=node, load_balancer=True, lb_dir=str(lb_dir), lb_bind="127.0.0.1")
        env.wait_for(lambda: sum(load.ok.values()) > served + 60, timeout=20, message="traffic across the agent restart")
        bad_end = len(load.bad)
    print(f"\nLB: SIGKILL of a target: {killed_failures} failed requests, out of the target group in "
          f"{out_of_rotation:.2f} s; HAProxy killed: serving again in {back:.2f} s")
    assert out_of_rotation <= 5.0  # one health-check interval
    assert killed_failures <= 4  # at most those in flight on it (two clients, a retry each)
    assert back <= 3.0
    assert bad_end == bad_after_restart, load.bad[bad_after_restart:]  # the agent restart dropped nothing


def test_bad_load_balancer_input_is_refused_with_field_paths(dockyard_env):
    env = dockyard_env
    env.start_orchestrator()
    bad = """
apiVersion: dockyard/v1
kind: TargetGroup
metadata: {name: raw}
spec: {protocol: TCP}
---
apiVersion: dockyard/v1
kind: LoadBalancer
metadata: {name: front}
spec:
  listeners:
    - port: 8080
      protocol: HTTP
      defaultActions: [{targetGroupName: raw}]
      rules: [{priority: 1, conditions: [{field: path-pattern, values: ["/x*"]}], actions: [{targetGroupName: nope}]}]
"""
    cp = env.cli("apply", "-f", env.write_manifest(bad), check=False)
    assert cp.returncode == 1
    assert "spec.listeners[0].defaultActions[0].targetGroupName" in cp.stderr and "TCP" in cp.stderr, cp.stderr
    assert "spec.listeners[0].rules[0].actions[0].targetGroupName" in cp.stderr and "'nope'" in cp.stderr, cp.stderr
    assert env.get(f"/v1/clusters/{env.cluster}/targetgroups")["targetGroups"] == []  # nothing changed


def test_rendered_config_is_valid_for_haproxy(tmp_path):
    """Every construct agent.lb.config writes (rules, weights, TCP, checks) passes `haproxy -c`."""
    from agent.lb import config
    from dockyard.lb import LbDesired, LbTarget, LbTargetGroup, TargetGroupHealthCheck
    from test_lb_plan import ROUTED

    hc = TargetGroupHealthCheck(path="/health", intervalSeconds=5, timeoutSeconds=2, matcher={"httpCode": "200-204"})
    t1 = LbTarget(id="t1_80", taskId="t1", address="10.0.0.2", port=49201)
    d = LbDesired(listeners=ROUTED, targetGroups=[
        LbTargetGroup(name="web", protocol="HTTP", healthCheck=hc, targets=[t1]),
        LbTargetGroup(name="web3", protocol="HTTP", healthCheck=hc),
        LbTargetGroup(name="web2", protocol="TCP", healthCheck=TargetGroupHealthCheck(protocol="TCP"))])
    cfg = tmp_path / "h.cfg"
    cfg.write_text(config.render(d, config.Paths(str(tmp_path / "a.sock"), str(tmp_path / "pid")), "127.0.0.1", {"web": [t1]}))
    cp = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr


SLOW_APP = """
      command: ["sh", "-c", "trap '' TERM; mkdir -p /www/cgi-bin; echo ok > /www/health; echo {rev} > /www/index.html;
        printf '#!/bin/sh\\\\necho Content-Type: text/plain\\\\necho\\\\nsleep 25\\\\necho done\\\\n' > /www/cgi-bin/slow;
        chmod +x /www/cgi-bin/slow; exec httpd -f -p 8080 -h /www"]"""


@pytest.mark.slow
def test_sigterm_ignoring_app_drains_a_long_request_is_cut_only_at_the_delay_and_a_new_listener_reloads_seamlessly(lb_env):
    env, lb_dir = lb_env
    port, port2 = free_port(), free_port()
    manifest = web_manifest(port, "rev1", 2).replace("deregistrationDelay: 20", "deregistrationDelay: 4")
    # The app ignores SIGTERM (killed after stopTimeout) and has a 25 s endpoint.
    manifest = manifest.replace(
        """      command: ["sh", "-c", "mkdir -p /www; echo rev1 > /www/index.html; echo ok > /www/health; exec httpd -f -p 8080 -h /www"]""",
        SLOW_APP.strip("\n").format(rev="rev1"))
    env.start_orchestrator()
    env.start_agent(load_balancer=True, lb_dir=str(lb_dir), lb_bind="127.0.0.1")
    env.cli("apply", "-f", env.write_manifest(manifest))
    env.wait_for(env.completed("web", "web:1"), timeout=90, message="deployment COMPLETED")
    env.wait_for(_healthy_targets(env, 2), timeout=60, message="2 healthy targets")
    # A long request lands on one of the two tasks; stop that task while it runs. Its target is
    # found before the load starts (the load's own short sessions made another task look busy
    # on a loaded machine, and the wrong task was stopped).
    result: dict = {}

    def slow() -> None:
        t0 = time.monotonic()
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/cgi-bin/slow", timeout=30)
            result.update(status=r.status_code, body=r.text.strip())
        except httpx.HTTPError as e:
            result.update(error=f"{type(e).__name__}")
        result["seconds"], result["end"] = time.monotonic() - t0, time.monotonic()

    th = threading.Thread(target=slow)
    th.start()

    def busy_targets() -> set[str]:
        tg = env.get(f"/v1/clusters/{env.cluster}/targetgroups/web")["targetGroup"]
        return {t["taskId"] for t in tg["targets"] if any(h["sessions"] > 0 for h in t["health"].values())}

    def long_request_target() -> str | None:  # busy in two samples 1 s apart: the 25 s request
        first = busy_targets()
        time.sleep(1.0)
        both = first & busy_targets()
        return next(iter(both)) if len(both) == 1 else None

    busy = {"taskId": env.wait_for(long_request_target, timeout=10, message="the long request's target")}
    with Load(f"http://127.0.0.1:{port}/") as load:
        env.wait_for(lambda: sum(load.ok.values()) >= 20, timeout=20, message="traffic flowing")
        t_stop = time.monotonic()
        env.cli("stop", busy["taskId"])
        task = env.get(f"/v1/clusters/{env.cluster}/tasks/{busy['taskId']}")["task"]
        assert task["lastStatus"] == "DEACTIVATING", task  # its long request keeps it draining
        th.join(timeout=40)
        # A listener added to the running load balancer: a seamless reload, nothing dropped.
        bad_before = len(load.bad)
        env.cli("apply", "-f", env.write_manifest(manifest.replace(
            "      defaultActions: [{type: forward, targetGroupName: web}]",
            f"      defaultActions: [{{type: forward, targetGroupName: web}}]\n    - port: {port2}\n      protocol: HTTP\n"
            "      defaultActions: [{type: forward, targetGroupName: web}]")))
        env.wait_for(lambda: httpx.get(f"http://127.0.0.1:{port2}/", timeout=2).status_code == 200, timeout=20,
                     message="the new listener serves")
        env.wait_for(lambda: sum(load.ok.values()) > 0 and _healthy_targets(env, 2)(), timeout=60, message="replacement healthy")
    cut_after = result.get("end", t_stop) - t_stop  # seconds from the stop until the long request ended
    print(f"\nLB: long request cut {cut_after:.1f} s after the stop ({result}); {len(load.bad)} failed of "
          f"{sum(load.ok.values()) + len(load.bad)}; stop -> DEACTIVATING with drainingSince {task['drainingSince']}")
    assert load.bad == [], load.bad[:10]  # the SIGTERM-ignoring app lost nothing; the reload dropped nothing
    assert len(load.bad) == bad_before
    # The long request was not cut at the stop but only once deregistrationDelay (4 s) ran out
    # (then SIGTERM, ignored, and SIGKILL after stopTimeout 2 s): about 6-7 s, more on a loaded machine; it
    # would have taken 25 s.
    assert result.get("body") != "done", result
    assert 3.5 <= cut_after <= 16, result


def test_a_listener_port_taken_on_the_node_is_reported_and_the_others_serve(lb_env):
    env, lb_dir = lb_env
    import socket

    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy, free = taken.getsockname()[1], free_port()
    try:
        env.start_orchestrator()
        env.start_agent(load_balancer=True, lb_dir=str(lb_dir), lb_bind="127.0.0.1")
        lbs = f"""
apiVersion: dockyard/v1
kind: TargetGroup
metadata: {{name: web}}
spec: {{}}
---
apiVersion: dockyard/v1
kind: LoadBalancer
metadata: {{name: front}}
spec:
  listeners:
    - {{port: {busy}, protocol: HTTP, defaultActions: [{{targetGroupName: web}}]}}
    - {{port: {free}, protocol: HTTP, defaultActions: [{{targetGroupName: web}}]}}
"""
        env.cli("apply", "-f", env.write_manifest(lbs))

        def reported():
            (lb,) = env.get(f"/v1/clusters/{env.cluster}/loadbalancers")["loadBalancers"]
            ls = {x["port"]: x for x in lb["nodes"][0]["listeners"]} if lb["nodes"] else {}
            return ls if busy in ls and free in ls else None
        ls = env.wait_for(reported, timeout=20, message="listener reports")
        assert ls[busy]["ok"] is False and f"port {busy} is in use" in ls[busy]["error"]
        assert ls[free]["ok"] is True
        assert httpx.get(f"http://127.0.0.1:{free}/", timeout=5).status_code == 503  # serving: no targets yet
        assert f"{busy}/HTTP" in env.cli("get", "loadbalancers").stdout
        # Another load balancer on a port of this one: refused at apply, naming the field.
        other = lbs.replace("name: front", "name: other").replace(f"port: {busy}", f"port: {free_port()}")
        cp = env.cli("apply", "-f", env.write_manifest(other), check=False)
        assert cp.returncode == 1 and "spec.listeners[1].port" in cp.stderr and "'front'" in cp.stderr, cp.stderr
    finally:
        taken.close()
