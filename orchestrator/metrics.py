"""Prometheus metrics of the control plane (served at /metrics; the catalogue is docs/metrics.md).

Two kinds:

* events, counted or timed where they happen (the instruments below): task transitions,
  placements, API requests, reconcile passes, store transactions, MQTT traffic;
* state (tasks per service, resources per node...), generated at scrape time from the in-memory
  State by :class:`orchestrator.metrics_collector.StateCollector`: nothing is kept for it.

Labels are bounded: cluster, service and node names, ECS status words, route templates.
"""
from __future__ import annotations

import platform
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from dockyard import __version__
from dockyard.wire import StopCode

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LIFECYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)

BUILD_INFO = Gauge("dockyard_build_info", "dockyard build: always 1, labelled with the version",
                   ["version", "python"])
BUILD_INFO.labels(version=__version__, python=platform.python_version()).set(1)

GC_SECONDS = Counter("dockyard_gc_seconds_total", "CPU seconds in the cyclic garbage collector, by generation "
                     "(dockyard.gcpolicy)", ["generation"])
TASKS_CREATED = Counter("dockyard_tasks_created_total", "Tasks created (service replicas and run-task)")
TASKS_STOPPED = Counter("dockyard_tasks_stopped_total", "Tasks that reached STOPPED or were asked to stop", ["reason"])
AUTOSCALING_ACTIVITIES = Counter("dockyard_autoscaling_activities_total",
                                 "Desired counts set by auto scaling (docs/autoscaling.md)", ["direction"])
TASK_TRANSITIONS = Counter("dockyard_task_transitions_total",
                           "Task lastStatus changes, by the status entered (stop_code: the ECS stopCode when STOPPED)",
                           ["last_status", "stop_code"])
PLACEMENTS = Counter("dockyard_placements_total", "Tasks placed onto nodes by the scheduler")
CREATED_TO_PLACED = Histogram("dockyard_task_created_to_placed_seconds",
                              "From a task's creation (apply, scale, run-task, replacement) to its placement on a node",
                              buckets=LIFECYCLE_BUCKETS)
PLACED_TO_RUNNING = Histogram("dockyard_task_placed_to_running_seconds",
                              "From a task's placement on a node to its first RUNNING report",
                              buckets=LIFECYCLE_BUCKETS)
DESIRED_PUBLISHED = Counter("dockyard_desired_documents_published_total", "Desired documents published to nodes")
DESIRED_ACK_SECONDS = Histogram("dockyard_desired_ack_seconds",
                                "From a desired document's publication to the agent's acknowledgement of its generation",
                                buckets=LATENCY_BUCKETS)
STATUS_RECEIVED = Counter("dockyard_status_messages_total", "Status messages received from agents", ["kind"])
MQTT_RECEIVED = Counter("dockyard_mqtt_received_messages_total", "MQTT messages received, by topic leaf", ["topic"])
MQTT_RECEIVED_BYTES = Counter("dockyard_mqtt_received_bytes_total", "MQTT payload bytes received, by topic leaf",
                              ["topic"])
MQTT_SENT = Counter("dockyard_mqtt_sent_messages_total", "MQTT messages published, by topic leaf", ["topic"])
MQTT_SENT_BYTES = Counter("dockyard_mqtt_sent_bytes_total", "MQTT payload bytes published, by topic leaf", ["topic"])
RECONCILE_SECONDS = Histogram("dockyard_reconcile_pass_seconds", "Duration of one reconcile pass",
                              buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
SCHEDULE_SECONDS = Histogram("dockyard_schedule_seconds", "Duration of one scheduling batch",
                             buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
STORE_TRANSACTION_SECONDS = Histogram("dockyard_store_transaction_seconds",
                                      "Duration of one store write transaction (a flush of the changed records)",
                                      buckets=LATENCY_BUCKETS)
FENCING_ALERTS = Counter("dockyard_fencing_alerts_total",
                         "Desired versions this orchestrator did not publish: reassert (epoch raised), refused "
                         "(beyond --epoch-window), foreign_desired (another client published a desired document)",
                         ["kind"])
API_REQUESTS = Counter("dockyard_api_requests_total", "HTTP API requests", ["method", "status"])
API_REQUEST_SECONDS = Histogram("dockyard_api_request_duration_seconds",
                                "HTTP API request duration, by method, route template and status code",
                                ["method", "route", "status"], buckets=LATENCY_BUCKETS)

# Topic leaves counted (anything else is counted as "other": labels stay bounded).
_LEAVES = frozenset({"desired", "status", "presence"})
_STOP_CODES = frozenset(StopCode.__args__)  # type: ignore[attr-defined]


def leaf(name: str) -> str:
    return name if name in _LEAVES else "other"


def transition(last_status: str, stop_code: str | None) -> None:
    """Count a task entering ``last_status`` (stop_code only for STOPPED)."""
    code = ""
    if last_status == "STOPPED":
        code = stop_code if stop_code is not None and stop_code in _STOP_CODES else ("other" if stop_code else "none")
    child = _TRANSITION_CHILDREN.get((last_status, code))
    if child is None:  # labels() costs ~4 us a call: 3 calls per task on the placement path
        child = _TRANSITION_CHILDREN[(last_status, code)] = TASK_TRANSITIONS.labels(last_status=last_status,
                                                                                     stop_code=code)
    child.inc()


# Bounded: task statuses x (stop codes, "other", "none", "").
_TRANSITION_CHILDREN: dict[tuple[str, str], Any] = {}
