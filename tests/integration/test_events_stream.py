"""``dockyard events -f`` follows the API's event stream (orchestrator.events_api): a new event arrives within
moments, not at the next poll, and the command holds one request open instead of polling."""
from __future__ import annotations

import queue
import signal
import subprocess
import threading
import time

from harness import DOCKYARD, IMAGE

SVC = f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: quiet}}
spec:
  containerDefinitions: [{{name: quiet, image: {IMAGE}, memory: 16}}]
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: quiet}}
spec: {{taskDefinition: quiet, desiredCount: 0}}
"""


def service_gets(env) -> int:
    """GET requests of the service view the orchestrator served (the poll fallback's route)."""
    route = 'route="/v1/clusters/{cluster}/services/{name}"'
    text = env.api.get("/metrics").text
    return sum(int(float(ln.rsplit(" ", 1)[1])) for ln in text.splitlines()
               if ln.startswith("dockyard_api_request_duration_seconds_count{") and route in ln and 'method="GET"' in ln)


def test_events_follow_streams_new_events(dockyard_env):
    env = dockyard_env
    env.start_orchestrator()
    env.cli("apply", "-f", str(env.write_manifest(SVC)))
    f = subprocess.Popen([DOCKYARD, "--server", env.base_url, "-c", env.cluster, "events", "-f", "--service", "quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.cli_env())
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in f.stdout], daemon=True).start()  # type: ignore[union-attr]

    def wait_line(text: str, timeout: float) -> float:
        t0 = time.monotonic()
        while True:
            ln = lines.get(timeout=max(0.01, timeout - (time.monotonic() - t0)))
            if text in ln:
                return time.monotonic() - t0

    try:
        wait_line("created with task definition", 30)
        time.sleep(0.5)  # the stream is open (a change before it would be listed at once anyway)
        t0 = time.monotonic()
        env.cli("scale", "quiet", "0")
        wait_line("desiredCount set to 0", 10)
        assert time.monotonic() - t0 < 10
        # One long request, not a poll a second: the service view was asked once (the first listing).
        before = service_gets(env)
        time.sleep(3)
        assert service_gets(env) == before == 1
        assert f.poll() is None
    finally:
        f.send_signal(signal.SIGINT)
        f.wait(timeout=10)
    bad = env.cli("events", "-f", "--service", "nope", check=False)
    assert bad.returncode == 1 and "not found" in bad.stderr and "Traceback" not in bad.stderr, bad
