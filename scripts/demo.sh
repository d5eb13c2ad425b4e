#!/usr/bin/env bash
# Set-up + a secure Mosquitto of the demo's own + orchestrator + one agent (also a load-balancer node)
# + a 3-replica web service behind a load balancer on 127.0.0.1:8081, all local and offline.
# The broker is set up as on real machines (docs/security.md): no anonymous access, the dynamic-security
# plugin holding the orchestrator's login, the node's own credential issued by `dockyard node join`.
#
#   scripts/demo.sh          start (or restart) the demo
#   scripts/demo.sh stop     stop it: kill the demo's processes (pids in .run/) and remove
#                            the demo node's containers (labels dockyard.cluster=default
#                            AND dockyard.node=demo-node-1)
#
# State lives in .run/ (demo.db, broker/, *.pid, *.log). Re-running stops the previous demo first
# and starts from a fresh store and broker.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$REPO/.run"
PORT="${DOCKYARD_DEMO_PORT:-8080}"
LB_PORT=8081  # the demo load balancer's listener (manifests/demo/web.yaml)
SERVER="http://127.0.0.1:$PORT"
CLUSTER=default
NODE=demo-node-1
BROKER_PORT="${DOCKYARD_DEMO_BROKER_PORT:-1884}"  # the demo's own broker (the machine's 1883 stays as it is)
MQTT="mqtt://127.0.0.1:$BROKER_PORT"
BROKER_DIR="$RUN/broker"
DOCKYARD="$REPO/.venv/bin/dockyard"
REPLICAS=3

say() { printf '==> %s\n' "$*"; }
die() { printf 'demo.sh: ERROR: %s\n' "$*" >&2; exit 1; }

stop_pid() {  # stop_pid NAME: SIGTERM the pid in .run/NAME.pid, SIGKILL after 15 s
  local f="$RUN/$1.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # Only kill what is still our process (pids get reused).
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "dockyard $1"; then
      say "stopping $1 (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && { say "killing $1 (pid $pid)"; kill -KILL "$pid" 2>/dev/null || true; }
    fi
  fi
  rm -f "$f"
}

stop_by_pidfile() {  # stop_by_pidfile PIDFILE CMDLINE-PATTERN SIGNAL WHAT: only if the pid still runs that command
  local f="$1" pid
  [ -f "$f" ] || return 0
  pid="$(head -n1 "$f")"
  if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$2"; then
    say "stopping $4 (pid $pid)"
    kill "-$3" "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop_demo() {
  stop_pid agent
  # The agent leaves its HAProxy running on purpose (a restarted agent adopts it); USR1 = graceful stop.
  stop_by_pidfile "$RUN/lb/haproxy.pid" "$RUN/lb/haproxy.cfg" USR1 "the demo's HAProxy"
  stop_pid orchestrator
  stop_by_pidfile "$RUN/broker.pid" "$BROKER_DIR/mosquitto.conf" TERM "the demo's broker"
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    local ids
    ids="$(docker ps -aq --filter "label=dockyard.cluster=$CLUSTER" --filter "label=dockyard.node=$NODE")"
    if [ -n "$ids" ]; then
      say "removing the demo's containers (dockyard.cluster=$CLUSTER, dockyard.node=$NODE)"
      # shellcheck disable=SC2086
      docker rm -f $ids >/dev/null
    fi
  fi
}


if [ "${1:-}" = stop ]; then
  stop_demo
  say "demo stopped"
  exit 0
elif [ -n "${1:-}" ]; then
  die "usage: scripts/demo.sh [stop]"
fi

"$REPO/scripts/bootstrap.sh" || die "bootstrap failed"
mkdir -p "$RUN"
stop_demo  # re-runnable: a previous demo's processes and containers go first
rm -f "$RUN/demo.db" "$RUN/demo.db-wal" "$RUN/demo.db-shm"

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  die "port $PORT is in use by something else (set DOCKYARD_DEMO_PORT to use another)"
fi

PY="$REPO/.venv/bin/python"
# The API needs a token: the orchestrator's first start writes an admin token here, the CLI reads it.
export DOCKYARD_TOKEN_FILE="$RUN/admin-token"
http_get() {  # http_get URL: body on stdout, non-zero unless 200 (no curl on a minimal Debian); sends the token
  "$PY" -c 'import os, sys, urllib.request
f = os.environ["DOCKYARD_TOKEN_FILE"]
t = open(f).read().strip() if os.path.exists(f) else ""
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + t} if t else {})
sys.stdout.write(urllib.request.urlopen(req, timeout=2).read().decode())' "$1" 2>/dev/null
}
show_log() { echo "---- last lines of $1" >&2; tail -n 40 "$1" >&2 || true; }

say "starting the demo's broker on 127.0.0.1:$BROKER_PORT (dockyard broker init: no anonymous access)"
if (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null; then
  die "port $BROKER_PORT is in use by something else (set DOCKYARD_DEMO_BROKER_PORT to use another)"
fi
rm -rf "$BROKER_DIR"
"$DOCKYARD" broker init "$BROKER_DIR" --port "$BROKER_PORT" --persistence >/dev/null
chmod 755 "$RUN"  # Mosquitto, started as root, drops to its own user, which must reach the plugin's file
setsid nohup mosquitto -c "$BROKER_DIR/mosquitto.conf" </dev/null >"$RUN/broker.log" 2>&1 &
echo $! >"$RUN/broker.pid"
for i in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null && break
  kill -0 "$(cat "$RUN/broker.pid")" 2>/dev/null || { show_log "$RUN/broker.log"; die "the broker exited"; }
  [ "$i" = 100 ] && { show_log "$RUN/broker.log"; die "the broker is not listening after 10 s"; }
  sleep 0.1
done

say "starting orchestrator on $SERVER (log: .run/orchestrator.log)"
setsid nohup "$DOCKYARD" orchestrator --listen "127.0.0.1:$PORT" --store "$RUN/demo.db" --mqtt "$MQTT" \
  --mqtt-credentials "$BROKER_DIR/orchestrator-credentials.json" --admin-token-file "$DOCKYARD_TOKEN_FILE" \
  </dev/null >"$RUN/orchestrator.log" 2>&1 &
echo $! >"$RUN/orchestrator.pid"
for i in $(seq 1 150); do
  http_get "$SERVER/healthz" >/dev/null && break
  kill -0 "$(cat "$RUN/orchestrator.pid")" 2>/dev/null || { show_log "$RUN/orchestrator.log"; die "orchestrator exited"; }
  [ "$i" = 150 ] && { show_log "$RUN/orchestrator.log"; die "orchestrator not healthy after 15 s"; }
  sleep 0.1
done

say "dockyard node join $NODE (its own broker credential: its topics only)"
"$DOCKYARD" --server "$SERVER" -c "$CLUSTER" node join "$NODE" -o "$RUN/node-credentials.json" >/dev/null

say "starting agent $NODE (log: .run/agent.log)"
setsid nohup "$DOCKYARD" agent --node-id "$NODE" --cluster "$CLUSTER" --mqtt "$MQTT" \
  --mqtt-credentials "$RUN/node-credentials.json" \
  --docker unix:///var/run/docker.sock --attribute demo=true \
  --load-balancer --lb-dir "$RUN/lb" --lb-bind 127.0.0.1 --state-dir "$RUN/agent-state" \
  </dev/null >"$RUN/agent.log" 2>&1 &
echo $! >"$RUN/agent.pid"
node_connected() {
  http_get "$SERVER/v1/clusters/$CLUSTER/nodes" | "$PY" -c '
import json, sys
nodes = json.load(sys.stdin).get("nodes", [])
sys.exit(0 if any(n.get("nodeId") == sys.argv[1] and n.get("connected") for n in nodes) else 1)' "$NODE"
}
for i in $(seq 1 300); do
  node_connected && break
  kill -0 "$(cat "$RUN/agent.pid")" 2>/dev/null || { show_log "$RUN/agent.log"; die "agent exited"; }
  [ "$i" = 300 ] && { show_log "$RUN/agent.log"; die "node $NODE not connected after 30 s"; }
  sleep 0.1
done

say "dockyard apply -f manifests/demo/"
"$DOCKYARD" --server "$SERVER" -c "$CLUSTER" apply -f "$REPO/manifests/demo/"

say "waiting (up to 60 s) for $REPLICAS RUNNING tasks"
running() {
  http_get "$SERVER/v1/clusters/$CLUSTER/tasks" | "$PY" -c '
import json, sys
print(sum(t.get("lastStatus") == "RUNNING" for t in json.load(sys.stdin).get("tasks", [])))'
}
n=0
for i in $(seq 1 120); do
  n="$(running || echo 0)"
  [ "$n" -ge "$REPLICAS" ] && break
  [ "$i" = 120 ] && { show_log "$RUN/agent.log"; show_log "$RUN/orchestrator.log"; die "only $n of $REPLICAS tasks RUNNING after 60 s"; }
  sleep 0.5
done

say "dockyard rollout status web (health checks pass within ~10 s)"
"$DOCKYARD" --server "$SERVER" -c "$CLUSTER" rollout status web --timeout 60 \
  || echo "    (rollout not complete yet; see: dockyard describe service web)"

say "waiting (up to 60 s) for the load balancer on 127.0.0.1:$LB_PORT"
for i in $(seq 1 120); do
  http_get "http://127.0.0.1:$LB_PORT/" >/dev/null && break
  [ "$i" = 120 ] && { show_log "$RUN/agent.log"; die "the load balancer does not answer on 127.0.0.1:$LB_PORT"; }
  sleep 0.5
done
say "six requests to the load balancer (each replica answers with its hostname):"
for _ in 1 2 3 4 5 6; do printf '    %s\n' "$(http_get "http://127.0.0.1:$LB_PORT/")"; done

echo
say "dockyard get tasks"
"$DOCKYARD" --server "$SERVER" -c "$CLUSTER" get tasks
echo
say "dockyard get services"
"$DOCKYARD" --server "$SERVER" -c "$CLUSTER" get services
cat <<EOF

The demo is running: orchestrator on $SERVER, agent $NODE, $REPLICAS replicas of the web service.
Look around:
    export DOCKYARD_SERVER=$SERVER
    export DOCKYARD_TOKEN_FILE=$DOCKYARD_TOKEN_FILE   # the admin token (docs/security.md)
    .venv/bin/dockyard get nodes
    .venv/bin/dockyard describe service web
    .venv/bin/dockyard describe targetgroup web     # targets, health, sessions
    curl http://127.0.0.1:$LB_PORT/                  # answered by the replicas in turn
    .venv/bin/dockyard scale web 5
    docker ps --filter label=dockyard.node=$NODE
    tail -f .run/orchestrator.log .run/agent.log
Stop it (processes by pid, containers by label):
    scripts/demo.sh stop
EOF
