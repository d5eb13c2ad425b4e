"""Load balancing across hosts (issue 11) on the multi-host test bed: HAProxy on host 1, the
service's tasks on hosts 2 and 3, steady load to host 1's bed address through a 100/50
rolling deployment, a node drain and a health-check failure replacement: 0 failed requests."""
from __future__ import annotations

import pytest

from harness import docker
from loadgen import Load
from test_load_balancing import _healthy_targets, _kill_haproxy, web_manifest
from testbed import Testbed

pytestmark = pytest.mark.slow

PLACE = """  placementConstraints: [{type: memberOf, expression: "attribute:role == app"}]
"""


@pytest.fixture(scope="module")
def bed():
    with Testbed(3) as tb:
        yield tb


def test_lb_on_one_host_serves_tasks_on_two_others_through_deploy_drain_and_health_replacement(dockyard_env, bed, tmp_path):
    env = dockyard_env
    lb_dir = tmp_path / "lb"
    bed.attach(env)
    for k, h in bed.hosts.items():
        if not bed._reachable(h.docker_url):
            bed.start_dockerd(k)
    env.start_orchestrator()
    try:
        bed.start_agent(env, 1, load_balancer=True, lb_dir=str(lb_dir), attributes={"role": "lb"})
        for k in (2, 3):
            bed.start_agent(env, k, attributes={"role": "app"})
        port = 18080

        def manifest(rev: str) -> str:
            m = web_manifest(port, rev, 2, deploy=", maximumPercent: 100, minimumHealthyPercent: 50")
            m = m.replace("maximumPercent: 200, minimumHealthyPercent: 100, ", "")
            return m.replace("  loadBalancers:", PLACE + "  loadBalancers:")

        env.cli("apply", "-f", env.write_manifest(manifest("rev1")))
        env.wait_for(env.completed("web", "web:1"), timeout=90, message="deployment COMPLETED")
        env.wait_for(_healthy_targets(env, 2), timeout=60, message="2 healthy targets")
        nodes = {t["nodeId"] for t in env.running_tasks()}
        assert nodes == {bed.node_id(env, 2), bed.node_id(env, 3)}, nodes  # spread over the app hosts
        with Load(f"http://{bed.hosts[1].ip}:{port}/") as load:
            env.wait_for(lambda: sum(load.ok.values()) >= 20, timeout=20, message="traffic through host 1")
            # 100/50: one old task drains and stops before its replacement starts.
            env.cli("apply", "-f", env.write_manifest(manifest("rev2")))
            env.wait_for(env.completed("web", "web:2"), timeout=120, message="rev2 COMPLETED")
            env.wait_for(_healthy_targets(env, 2), timeout=60, message="2 healthy rev2 targets")
            after_deploy = load.snapshot()
            # Drain host 2: its task moves to host 3, drained from the LB first.
            env.cli("node", "drain", bed.node_id(env, 2))
            env.wait_for(lambda: {t["nodeId"] for t in env.running_tasks()} == {bed.node_id(env, 3)}
                         and _healthy_targets(env, 2)(), timeout=90, message="tasks off the drained host")
            env.cli("node", "activate", bed.node_id(env, 2))
            # A failing health check (the traffic path still answers): the task is replaced.
            victim = env.running_tasks()[0]
            cid = next(c["ID"] for c in bed.containers(env, 3, all=False) if c["Labels"]["dockyard.task"] == victim["taskId"])
            docker("exec", cid, "rm", "/www/health", host=bed.hosts[3].docker_url)
            env.wait_for(lambda: (t := env.get(f"/v1/clusters/{env.cluster}/tasks/{victim['taskId']}")["task"])
                         ["lastStatus"] == "STOPPED" and t, timeout=90, message="unhealthy target replaced")
            env.wait_for(_healthy_targets(env, 2), timeout=60, message="replacement healthy")
        total = sum(load.ok.values()) + len(load.bad)
        print(f"\nLB multi-host: {total} requests, {len(load.bad)} failed; {dict(load.ok)}")
        assert load.bad == [], load.bad[:10]
        assert after_deploy["rev1"] > 0 and after_deploy["rev2"] > 0
        assert load.ok["rev1"] == after_deploy["rev1"]
    finally:
        _kill_haproxy(lb_dir)
