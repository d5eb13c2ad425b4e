"""Prometheus metrics of the control plane (served at /metrics)."""
from prometheus_client import Counter, Gauge, Histogram

TASKS_CREATED = Counter("dockyard_tasks_created_total", "Tasks created (service replicas and run-task)")
TASKS_STOPPED = Counter("dockyard_tasks_stopped_total", "Tasks that reached STOPPED or were asked to stop", ["reason"])
PLACEMENTS = Counter("dockyard_placements_total", "Tasks placed onto nodes by the scheduler")
DESIRED_PUBLISHED = Counter("dockyard_desired_documents_published_total", "Desired documents published to nodes")
STATUS_RECEIVED = Counter("dockyard_status_messages_total", "Status messages received from agents", ["kind"])
RECONCILE_SECONDS = Histogram("dockyard_reconcile_pass_seconds", "Duration of one reconcile pass",
                              buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
SCHEDULE_SECONDS = Histogram("dockyard_schedule_seconds", "Duration of one scheduling batch",
                             buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
FENCING_ALERTS = Counter("dockyard_fencing_alerts_total",
                         "Desired versions this orchestrator did not publish: reassert (epoch raised), refused "
                         "(beyond --epoch-window), foreign_desired (another client published a desired document)",
                         ["kind"])
NODES_CONNECTED = Gauge("dockyard_nodes_connected", "Connected nodes")
API_REQUESTS = Counter("dockyard_api_requests_total", "HTTP API requests", ["method", "status"])
