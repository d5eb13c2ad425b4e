#!/usr/bin/env bash
# Multi-host test bed on one machine (root only): N "hosts", each a network namespace with its
# own IP and its own dockerd, all on one bridge, plus a Mosquitto they reach over the bridge.
#
#   scripts/testbed.sh up N [--live-restore K[,K...]]
#                                      create hosts h1..hN (idempotent: adds missing ones); the listed
#                                      hosts' dockerds run with --live-restore (containers survive a
#                                      dockerd restart), the others without (Debian's default). Without
#                                      the option each host keeps its setting; a running dockerd whose
#                                      setting differs is restarted.
#   scripts/testbed.sh down            remove everything the test bed created
#   scripts/testbed.sh status          list hosts, their dockerd pids and link states
#   scripts/testbed.sh env K           print shell variables for host K (DOCKER_HOST, NETNS, IP, ...)
#   scripts/testbed.sh kill-dockerd K  SIGKILL host K's dockerd (a host failure; containers die too)
#   scripts/testbed.sh start-dockerd K (re)start host K's dockerd
#   scripts/testbed.sh stop-dockerd K  SIGTERM host K's dockerd and wait until it is gone (a restart's
#                                      first half: without live-restore it stops its containers first)
#   scripts/testbed.sh cut K           take host K's link down (a network partition)
#   scripts/testbed.sh restore K       bring it back
#   scripts/testbed.sh broker-stop [kill]  stop the bed's Mosquitto: SIGTERM (it publishes every Will),
#                                      or SIGKILL with "kill" (no Wills); waits until it is gone
#   scripts/testbed.sh broker-start    start it again (same config: persistence off, so nothing retained)
#
# Layout (k = 1..N):
#   bridge dybr0 10.77.0.1/24 in the root namespace; Mosquitto on 10.77.0.1:1883, no anonymous access
#   (`dockyard broker init /run/dockyard-testbed/broker`: log in with its orchestrator-credentials.json)
#   netns dy-hK, veth dyvK (root side, on dybr0) <-> eth0 (in dy-hK) 10.77.0.(10+K)/24
#   dockerd of hK: socket unix:///run/dockyard-testbed/hK.sock, --data-root /var/lib/dockyard-testbed/hK,
#                  --exec-root /run/dockyard-testbed/hK, --bip 172.(30+K).0.1/24, started with
#                  `nsenter --net=/var/run/netns/dy-hK` (NOT `ip netns exec`, which remounts /sys and
#                  breaks dockerd; and never a second dockerd in the root namespace: on exit it
#                  deletes the main docker0).
# Run an agent on host K (its credential from `dockyard node join hK -o hK.json` against an orchestrator
# started with --mqtt-credentials /run/dockyard-testbed/broker/orchestrator-credentials.json):
#   nsenter --net=/var/run/netns/dy-hK .venv/bin/dockyard agent --node-id hK --cluster default \
#       --mqtt mqtt://10.77.0.1:1883 --mqtt-credentials hK.json --docker unix:///run/dockyard-testbed/hK.sock
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BR=dybr0
BR_IP=10.77.0.1
RUN=/run/dockyard-testbed
DATA=/var/lib/dockyard-testbed
IMAGE="${DOCKYARD_IMAGE:-dockyard-demo/busybox:latest}"
DOCKYARD="${DOCKYARD:-$REPO/.venv/bin/dockyard}"
MAX_HOSTS=20

say() { printf '==> %s\n' "$*"; }
die() { printf 'testbed: ERROR: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "the test bed needs root (network namespaces, dockerd)"

ns() { echo "dy-h$1"; }
veth() { echo "dyv$1"; }
host_ip() { echo "10.77.0.$((10 + $1))"; }
sock() { echo "$RUN/h$1.sock"; }
dpid_file() { echo "$RUN/h$1.dockerd.pid"; }
lr_file() { echo "$RUN/h$1.live-restore"; }  # present: host K's dockerd runs with --live-restore
pid_alive() {  # a zombie (dead, not yet reaped by an init that doesn't reap) counts as dead
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && [ "$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null)" != Z ]
}
alive() { [ -f "$1" ] && pid_alive "$(cat "$1")"; }
check_k() { [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$MAX_HOSTS" ] || die "host number 1..$MAX_HOSTS expected, got '${1:-}'"; }
hosts() { ip netns list 2>/dev/null | awk '{print $1}' | sed -n 's/^dy-h\([0-9]\+\)$/\1/p' | sort -n; }

ensure_bridge() {
  if ! ip link show "$BR" >/dev/null 2>&1; then
    say "creating bridge $BR $BR_IP/24"
    ip link add "$BR" type bridge
    ip addr add "$BR_IP/24" dev "$BR"
  fi
  ip link set "$BR" up
  # Docker loads br_netfilter and sets FORWARD policy DROP: let hosts talk to each other over the bridge.
  iptables -w -C FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null \
    || iptables -w -I FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null || true
  iptables -w -C INPUT -i "$BR" -j ACCEPT 2>/dev/null \
    || iptables -w -I INPUT -i "$BR" -j ACCEPT 2>/dev/null || true
}

ensure_broker() {
  mkdir -p "$RUN"; chmod 755 "$RUN"  # Mosquitto drops to the user mosquitto: it must reach $RUN/broker
  if alive "$RUN/mosquitto.pid" && (exec 3<>"/dev/tcp/$BR_IP/1883") 2>/dev/null; then return; fi
  # The secure broker, as docs/security.md sets it up: no anonymous access, the dynamic-security plugin holding
  # the orchestrator's client ($RUN/broker/orchestrator-credentials.json) and, as they join, one per node. The
  # plugin's file survives broker-stop/broker-start (node clients stay); retained messages do not.
  if [ ! -f "$RUN/broker/mosquitto.conf" ]; then
    "$DOCKYARD" broker init "$RUN/broker" --port 1883 --bind "$BR_IP" >/dev/null
    cat >>"$RUN/broker/mosquitto.conf" <<EOF
# The test bed's broker: reached by the hosts' agents over $BR and by the orchestrator in the root namespace.
max_queued_messages 100000
max_inflight_messages 0
log_dest stderr
log_type error
log_type warning
EOF
  fi
  say "starting the test bed's mosquitto on $BR_IP:1883 (secure: $RUN/broker)"
  setsid nohup mosquitto -c "$RUN/broker/mosquitto.conf" </dev/null >"$RUN/mosquitto.log" 2>&1 &
  echo $! >"$RUN/mosquitto.pid"
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/$BR_IP/1883") 2>/dev/null && return; sleep 0.1; done
  cat "$RUN/mosquitto.log" >&2; die "mosquitto did not listen on $BR_IP:1883"
}

ensure_netns() {  # ensure_netns K
  local k=$1 n v
  n=$(ns "$k"); v=$(veth "$k")
  if ! ip netns list | awk '{print $1}' | grep -qx "$n"; then
    say "creating host h$k: netns $n, $(host_ip "$k") on $BR"
    ip netns add "$n"
  fi
  if ! ip link show "$v" >/dev/null 2>&1; then
    ip link add "$v" type veth peer name eth0 netns "$n"
    ip -n "$n" addr add "$(host_ip "$k")/24" dev eth0
  fi
  ip link set "$v" master "$BR" up
  ip -n "$n" link set lo up
  ip -n "$n" link set eth0 up
  # No default route on purpose: a host reaches only 10.77.0.0/24, so anything that tries the
  # internet (an image pull) fails at once with "network unreachable" instead of timing out.
}

start_dockerd() {  # start_dockerd K
  local k=$1 n
  n=$(ns "$k")
  mkdir -p "$RUN/h$k" "$DATA/h$k"
  local want=false lr=()
  if [ -f "$(lr_file "$k")" ]; then want=true; lr=(--live-restore); fi
  if alive "$(dpid_file "$k")" && docker -H "unix://$(sock "$k")" info >/dev/null 2>&1; then
    [ "$(docker -H "unix://$(sock "$k")" info --format '{{.LiveRestoreEnabled}}' 2>/dev/null)" = "$want" ] && return
    say "restarting dockerd of h$k to set live-restore $want"
    kill_pidfile "$(dpid_file "$k")" 30
  fi
  say "starting dockerd of h$k (netns $n, socket $(sock "$k"), live-restore $want, log $RUN/h$k.dockerd.log)"
  rm -f "$(sock "$k")" "$(dpid_file "$k")"  # a killed dockerd leaves both behind
  # ...and its managed containerd's pid file: if that pid is a zombie (an init that doesn't
  # reap), the new dockerd would wait for it forever instead of starting a new containerd.
  local cpid="$RUN/h$k/containerd/containerd.pid"
  if [ -f "$cpid" ] && ! pid_alive "$(cat "$cpid")"; then rm -f "$cpid"; fi
  setsid nohup nsenter --net="/var/run/netns/$n" dockerd \
    --data-root "$DATA/h$k" --exec-root "$RUN/h$k" --pidfile "$(dpid_file "$k")" \
    --host "unix://$(sock "$k")" --bip "172.$((30 + k)).0.1/24" \
    --containerd-namespace "dy-h$k" --containerd-plugins-namespace "dy-h$k-plugins" "${lr[@]}" \
    </dev/null >>"$RUN/h$k.dockerd.log" 2>&1 &
  local pid=$!  # nsenter execs dockerd: this is dockerd's pid
  for _ in $(seq 1 120); do
    docker -H "unix://$(sock "$k")" info >/dev/null 2>&1 && return
    pid_alive "$pid" || break
    sleep 0.25
  done
  tail -n 30 "$RUN/h$k.dockerd.log" >&2; die "dockerd of h$k did not become ready (log above)"
}

load_image() {  # load_image K
  local k=$1
  docker -H "unix://$(sock "$k")" image inspect "$IMAGE" >/dev/null 2>&1 && return
  say "loading $IMAGE into h$k's dockerd"
  docker save "$IMAGE" | docker -H "unix://$(sock "$k")" load -q >/dev/null || die "loading $IMAGE into h$k failed"
}

kill_pidfile() {  # kill_pidfile FILE [SECONDS]: SIGTERM, then SIGKILL
  local f=$1 t=${2:-15} pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((t * 10))); do pid_alive "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

unmount_under() {  # lazily unmount everything mounted under a directory, deepest first
  local d=$1
  awk -v d="$d" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

host_down() {  # host_down K
  local k=$1 n s
  n=$(ns "$k"); s="unix://$(sock "$k")"
  if alive "$(dpid_file "$k")" && docker -H "$s" info >/dev/null 2>&1; then
    local ids; ids=$(docker -H "$s" ps -aq)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || docker -H "$s" rm -f $ids >/dev/null 2>&1 || true
  fi
  kill_pidfile "$(dpid_file "$k")" 15
  # Whatever still runs in the namespace (containerd, shims, containers, agents started with
  # nsenter) belongs to this host: kill those pids.
  if ip netns list | awk '{print $1}' | grep -qx "$n"; then
    local pids; pids=$(ip netns pids "$n" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    sleep 0.2
    ip netns del "$n" 2>/dev/null || true
  fi
  ip link del "$(veth "$k")" 2>/dev/null || true
  unmount_under "$RUN/h$k"; unmount_under "$DATA/h$k"
  rm -rf "$RUN/h$k" "$DATA/h$k" "$(sock "$k")" "$RUN/h$k.dockerd.log" "$(lr_file "$k")"
}

cmd_up() {
  local n=${1:-} lr=
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le "$MAX_HOSTS" ] || die "usage: testbed.sh up N (1..$MAX_HOSTS) [--live-restore K[,K...]]"
  if [ $# -ge 2 ]; then
    [ "$2" = --live-restore ] && [[ "${3-}" =~ ^([0-9]+(,[0-9]+)*)?$ ]] || die "usage: testbed.sh up N [--live-restore K[,K...]]"
    lr=",${3-},"
  fi
  for b in dockerd mosquitto nsenter ip iptables; do command -v "$b" >/dev/null || die "$b missing: run scripts/bootstrap.sh"; done
  docker image inspect "$IMAGE" >/dev/null 2>&1 || die "$IMAGE missing: run scripts/bootstrap.sh"
  ensure_bridge
  ensure_broker
  mkdir -p "$RUN"
  if [ -n "$lr" ]; then
    for k in $(seq 1 "$n"); do
      if [[ "$lr" == *",$k,"* ]]; then touch "$(lr_file "$k")"; else rm -f "$(lr_file "$k")"; fi
    done
  fi
  for k in $(seq 1 "$n"); do ensure_netns "$k"; start_dockerd "$k"; load_image "$k"; done
  say "test bed up: $n host(s); broker mqtt://$BR_IP:1883"
  cmd_status
}

cmd_down() {
  for k in $(hosts); do say "removing host h$k"; host_down "$k"; done
  # Hosts whose netns is already gone may have left dockerd/veths/dirs behind.
  for f in "$RUN"/h*.dockerd.pid; do
    [ -e "$f" ] || continue
    k=$(basename "$f" | sed -n 's/^h\([0-9]\+\)\.dockerd\.pid$/\1/p'); [ -n "$k" ] && host_down "$k"
  done
  for d in "$DATA"/h* "$RUN"/h*; do
    [ -e "$d" ] || continue
    unmount_under "$d"; rm -rf "$d"
  done
  if [ -f "$RUN/mosquitto.pid" ]; then say "stopping the test bed's mosquitto"; kill_pidfile "$RUN/mosquitto.pid" 5; fi
  if ip link show "$BR" >/dev/null 2>&1; then say "removing bridge $BR"; ip link del "$BR"; fi
  while iptables -w -D FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null; do :; done
  while iptables -w -D INPUT -i "$BR" -j ACCEPT 2>/dev/null; do :; done
  rm -rf "$RUN" "$DATA"
  say "test bed down"
}

cmd_status() {
  local any=0
  for k in $(hosts); do
    any=1
    local pid="-" state
    alive "$(dpid_file "$k")" && pid=$(cat "$(dpid_file "$k")")
    state=$(cat "/sys/class/net/$(veth "$k")/operstate" 2>/dev/null || echo missing)
    local lr=no; [ -f "$(lr_file "$k")" ] && lr=yes
    printf 'h%-3s netns %-7s ip %-12s dockerd pid %-8s socket unix://%s link %s live-restore %s\n' \
      "$k" "$(ns "$k")" "$(host_ip "$k")" "$pid" "$(sock "$k")" "$state" "$lr"
  done
  [ "$any" = 1 ] || echo "no test bed hosts"
}

cmd_env() {
  check_k "${1:-}"
  local k=$1
  echo "export NETNS=$(ns "$k")"
  echo "export HOST_IP=$(host_ip "$k")"
  echo "export DOCKER_HOST=unix://$(sock "$k")"
  echo "export DOCKYARD_MQTT=mqtt://$BR_IP:1883"
  echo "export NSENTER='nsenter --net=/var/run/netns/$(ns "$k")'"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env "${2:-}" ;;
  kill-dockerd)
    check_k "${2:-}"; say "killing dockerd of h$2"; f=$(dpid_file "$2")
    if [ -f "$f" ]; then
      pid=$(cat "$f"); kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do pid_alive "$pid" || break; sleep 0.1; done
    fi ;;
  start-dockerd) check_k "${2:-}"; start_dockerd "$2" ;;
  stop-dockerd) check_k "${2:-}"; say "stopping dockerd of h$2 (SIGTERM)"; kill_pidfile "$(dpid_file "$2")" 30 ;;
  cut) check_k "${2:-}"; say "cutting h$2's network ($(veth "$2") down)"; ip link set "$(veth "$2")" down ;;
  restore) check_k "${2:-}"; say "restoring h$2's network ($(veth "$2") up)"; ip link set "$(veth "$2")" up ;;
  broker-stop)
    sig=TERM; [ "${2:-}" = kill ] && sig=KILL
    f="$RUN/mosquitto.pid"
    if [ -f "$f" ]; then
      pid=$(cat "$f"); say "stopping the test bed's mosquitto (pid $pid, SIG$sig)"
      kill -"$sig" "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do pid_alive "$pid" || break; sleep 0.05; done
      pid_alive "$pid" && die "mosquitto pid $pid did not exit after SIG$sig"
      rm -f "$f"
    fi ;;
  broker-start) ensure_broker ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
