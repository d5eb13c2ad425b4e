"""Text views of target groups and load balancers."""
from __future__ import annotations

from orchestrator.render_lb import describe_targetgroup, loadbalancers_table, targetgroups_table

TG = {"name": "web", "cluster": "c", "protocol": "HTTP", "deregistrationDelay": 300, "slowStart": 0, "createdAt": 0,
      "healthCheck": {"path": "/health", "port": "traffic-port", "intervalSeconds": 30, "timeoutSeconds": 5,
                      "healthyThresholdCount": 5, "unhealthyThresholdCount": 2, "matcher": {"httpCode": "200"}},
      "services": ["web"], "loadBalancerNodes": ["lb1"],
      "targets": [{"id": "t1_80", "taskId": "abcdef1234567890", "nodeId": "n2", "address": "10.0.0.2", "port": 49200,
                   "health": {"lb1": {"state": "draining", "reason": "Target.DeregistrationInProgress", "sessions": 3}}}]}


def test_describe_targetgroup_shows_each_target_per_lb_node_with_reason_and_sessions():
    text = describe_targetgroup(TG, 10.0)
    assert "HTTP /health port traffic-port every 30s" in text
    line = next(ln for ln in text.splitlines() if "t1_80" in ln)
    assert "abcdef123456" in line and "10.0.0.2:49200" in line and "lb1" in line
    assert "draining" in line and "Target.DeregistrationInProgress" in line and line.rstrip().endswith("3")


def test_tables():
    assert "HTTP /health every 30s" in targetgroups_table([TG], 10.0)
    lb = {"name": "front", "createdAt": 0, "listeners": [{"port": 80, "protocol": "HTTP"}],
          "nodes": [{"nodeId": "lb1", "address": "10.0.0.1", "haproxyRunning": False}]}
    row = loadbalancers_table([lb], 10.0).splitlines()[1]
    assert "80/HTTP" in row and "lb1(10.0.0.1, down)" in row
