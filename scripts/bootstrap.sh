#!/usr/bin/env bash
# Idempotent set-up shared by scripts/test.sh and scripts/demo.sh.
#
#   * installs docker.io, mosquitto, busybox-static, iproute2, haproxy, docker-registry, docker-compose, systemd, prometheus, postgresql (apt) when a binary is missing
#   * creates .venv and installs the project with its test extras (skipped when up to date)
#   * starts dockerd when `docker info` fails
#   * starts mosquitto on 127.0.0.1:1883 when nothing listens there
#   * builds the offline image dockyard-demo/busybox:latest when absent
#
# Works as root on a fresh Debian 12 with nothing running; takes about a second when
# everything is already in place. Environment knobs:
#   DOCKYARD_IMAGE        image to build      (default dockyard-demo/busybox:latest)
#   DOCKYARD_SKIP_PIP=1   never run pip (e.g. offline with a venv you maintain yourself)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${DOCKYARD_IMAGE:-dockyard-demo/busybox:latest}"
MQTT_HOST=127.0.0.1
MQTT_PORT=1883

say() { printf '==> %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# Several scripts (or engineers' worktrees) may bootstrap at once: serialise. Daemons started
# below get `9>&-` so they do not inherit (and hold) the lock.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/dockyard-bootstrap.lock"
  flock -w 300 9 || die "another bootstrap holds ${TMPDIR:-/tmp}/dockyard-bootstrap.lock for 5 minutes"
fi

# ---------------------------------------------------------------- apt packages
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)  # load-balancer nodes (agent --load-balancer)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)  # a private registry for the pull-auth test
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)  # tests/integration/test_install.py (1.29)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)  # tests/integration/test_systemd_units.py (verify)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)  # tests/integration/test_prometheus.py
# PostgreSQL 15: the store tests on both backends and the HA tests start their own server (tests/integration/pgserver.py).
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql)
# /usr/local/bin/docker may be a client-only binary; docker.io brings /usr/bin/docker too.
if ! command -v docker >/dev/null 2>&1 && [[ ! " ${missing[*]-} " =~ " docker.io " ]]; then missing+=(docker.io); fi
# Debian's python3 needs python3-venv for `python3 -m venv`.
if [ ! -x "$REPO/.venv/bin/python" ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  is_root || die "missing packages: ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
  # Debian's mosquitto package may start its own broker (default config: no set_tcp_nodelay,
  # so ~88 ms per QoS 1 round trip) on 1883. Stop that one, by its pid file; ours starts below.
  if [[ " ${missing[*]} " =~ " mosquitto " ]] && [ -f /run/mosquitto/mosquitto.pid ]; then
    say "stopping the broker the mosquitto package started (pid $(cat /run/mosquitto/mosquitto.pid))"
    kill "$(cat /run/mosquitto/mosquitto.pid)" 2>/dev/null || true
    for _ in $(seq 1 30); do (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null || break; sleep 0.1; done
  fi
fi
command -v python3 >/dev/null 2>&1 || die "python3 (>= 3.11) is required"

# ---------------------------------------------------------------- virtualenv
VENV="$REPO/.venv"
STAMP="$VENV/.dockyard-installed"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv .venv"
  python3 -m venv "$VENV" || die "python3 -m venv .venv failed (on Debian: apt-get install python3-venv)"
fi
"$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die ".venv uses Python $("$VENV/bin/python" -V 2>&1); dockyard needs >= 3.11 (remove .venv and retry with a newer python3)"
if [ "${DOCKYARD_SKIP_PIP:-0}" != 1 ] && { [ ! -f "$STAMP" ] || [ "$REPO/pyproject.toml" -nt "$STAMP" ] || [ ! -x "$VENV/bin/dockyard" ]; }; then
  say "installing dockyard into .venv (pip install -e '.[test]')"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$REPO[test]" || die "pip install -e '.[test]' failed"
  touch "$STAMP"
fi

# ---------------------------------------------------------------- dockerd
if ! docker info >/dev/null 2>&1; then
  if [ -S /var/run/docker.sock ] && ! is_root; then
    die "docker info fails: is your user in the docker group? ($(docker info 2>&1 | tail -1))"
  fi
  is_root || die "dockerd is not running and starting it needs root"
  say "starting dockerd (log: /var/log/dockyard-dockerd.log)"
  setsid nohup dockerd </dev/null >/var/log/dockyard-dockerd.log 2>&1 9>&- &
  echo $! >/run/dockyard-dockerd.pid
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$(cat /run/dockyard-dockerd.pid)" 2>/dev/null || break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    tail -n 20 /var/log/dockyard-dockerd.log >&2 || true
    die "dockerd did not become ready within 30 s (see /var/log/dockyard-dockerd.log)"
  fi
fi

# ---------------------------------------------------------------- mosquitto
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
if ! port_open "$MQTT_HOST" "$MQTT_PORT"; then
  if is_root; then
    CONF_DIR=/etc/dockyard; RUN_DIR=/run/dockyard; LOG=/var/log/dockyard-mosquitto.log
  else
    CONF_DIR="$REPO/.run"; RUN_DIR="$REPO/.run"; LOG="$REPO/.run/mosquitto.log"
  fi
  mkdir -p "$CONF_DIR" "$RUN_DIR"
  CONF="$CONF_DIR/mosquitto.conf"
  cat >"$CONF" <<EOF
# Written by dockyard's scripts/bootstrap.sh: a local, anonymous broker for dev and tests.
listener $MQTT_PORT $MQTT_HOST
allow_anonymous true
# Without TCP_NODELAY a QoS 1 round trip costs ~88 ms instead of ~1 ms.
set_tcp_nodelay true
persistence false
max_queued_messages 100000
# 0 = no limit on in-flight QoS 1/2 messages per client.
max_inflight_messages 0
log_dest stderr
log_type error
log_type warning
EOF
  say "starting mosquitto on $MQTT_HOST:$MQTT_PORT (config: $CONF, log: $LOG)"
  setsid nohup mosquitto -c "$CONF" </dev/null >"$LOG" 2>&1 9>&- &
  echo $! >"$RUN_DIR/mosquitto.pid"
  for _ in $(seq 1 50); do
    port_open "$MQTT_HOST" "$MQTT_PORT" && break
    sleep 0.1
  done
  if ! port_open "$MQTT_HOST" "$MQTT_PORT"; then
    tail -n 20 "$LOG" >&2 || true
    die "mosquitto did not listen on $MQTT_HOST:$MQTT_PORT within 5 s (see $LOG)"
  fi
fi

# ---------------------------------------------------------------- offline image
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "building $IMAGE from /bin/busybox (offline, docker import)"
  d="$(mktemp -d)"
  trap 'rm -rf "$d"' EXIT
  mkdir -p "$d/bin" "$d/tmp" "$d/etc" "$d/www" "$d/root"
  chmod 1777 "$d/tmp"
  cp /bin/busybox "$d/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$d/bin/$a"; done
  echo "root:x:0:0:root:/root:/bin/sh" >"$d/etc/passwd"
  echo "root:x:0:" >"$d/etc/group"
  echo hello >"$d/www/index.html"
  tar -C "$d" -c . | docker import -c 'ENV PATH=/bin' - "$IMAGE" >/dev/null || die "docker import of $IMAGE failed"
  rm -rf "$d"; trap - EXIT
fi

# Older integration tests name the same image dockyard-test/busybox:latest: keep that tag too.
if ! docker image inspect dockyard-test/busybox:latest >/dev/null 2>&1; then
  docker tag "$IMAGE" dockyard-test/busybox:latest || die "docker tag $IMAGE dockyard-test/busybox:latest failed"
fi

say "ready: dockerd $(docker info --format '{{.ServerVersion}}' 2>/dev/null), mosquitto on $MQTT_HOST:$MQTT_PORT, image $IMAGE, .venv"
