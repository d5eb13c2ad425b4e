#!/usr/bin/env bash
# Build the dockyard image (both daemons) and a Mosquitto image without any container registry.
#
#   scripts/build-image.sh                 # dockyard:local and dockyard-mosquitto:local
#   DOCKYARD_BASE_IMAGE=python:3.11-slim scripts/build-image.sh   # with a registry: skip debootstrap
#
# Offline path (the default):
#   1. a minimal Debian bookworm rootfs made with debootstrap (minbase + python3-venv, mosquitto,
#      ca-certificates) from the Debian mirror apt uses; cached as a tarball under $DOCKYARD_CACHE
#      (default ~/.cache/dockyard), so later builds skip it (remove the tarball to refresh it);
#   2. `docker import` of that tarball as dockyard-base:bookworm (skipped when the image exists and
#      carries the tarball's digest);
#   3. a wheelhouse built on the host (`pip wheel` of the project and its runtime dependencies:
#      the build container needs no index);
#   4. `docker build` of the Dockerfile (BASE_IMAGE=dockyard-base:bookworm) and of
#      deploy/mosquitto/Dockerfile (FROM the same base, Debian's mosquitto package).
# Environment: DOCKYARD_IMAGE (default dockyard:local), DOCKYARD_MOSQUITTO_IMAGE
# (dockyard-mosquitto:local), DOCKYARD_CACHE, DOCKYARD_BASE_IMAGE (a public base instead of
# the local one; then no Mosquitto image is built: use eclipse-mosquitto or Debian's package),
# DOCKYARD_DEBIAN_MIRROR (default: the first Debian URI in /etc/apt/sources*, the mirror apt uses).
set -euo pipefail
t0=$SECONDS

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${DOCKYARD_IMAGE:-dockyard:local}"
MOSQUITTO_IMAGE="${DOCKYARD_MOSQUITTO_IMAGE:-dockyard-mosquitto:local}"
CACHE="${DOCKYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dockyard}"
BASE_IMAGE="${DOCKYARD_BASE_IMAGE:-}"
LOCAL_BASE=dockyard-base:bookworm
SUITE=bookworm
# What the image needs from Debian: python3 + venv (bookworm's python3 is externally managed,
# PEP 668: the project goes into /opt/dockyard), mosquitto for the broker image, CA certificates.
PACKAGES=python3,python3-venv,ca-certificates,mosquitto

say() { printf '==> [%3ss] %s\n' "$((SECONDS - t0))" "$*"; }
die() { printf 'build-image: ERROR: %s\n' "$*" >&2; exit 1; }


command -v docker >/dev/null 2>&1 || die "docker is required"
mkdir -p "$CACHE"

if [ -z "$BASE_IMAGE" ]; then
  # ------------------------------------------------------------ 1. the rootfs (cached)
  key="$(printf '%s %s' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)"
  TARBALL="$CACHE/rootfs-$SUITE-$key.tar"
  if [ ! -s "$TARBALL" ]; then
    [ "$(id -u)" -eq 0 ] || die "debootstrap needs root (or put a rootfs tarball at $TARBALL)"
    if ! command -v debootstrap >/dev/null 2>&1; then
      say "installing debootstrap (apt)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
        || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; } \
        || die "apt-get install debootstrap failed"
    fi
    mirror="${DOCKYARD_DEBIAN_MIRROR:-$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
      | head -1 | awk '{print $2}' || true)}"
    [ -n "$mirror" ] || die "no Debian mirror in /etc/apt/sources.list*: set DOCKYARD_DEBIAN_MIRROR"
    say "debootstrap $SUITE (minbase + $PACKAGES) from $mirror"
    root="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    # Slim it: apt lists, caches and docs are not needed at run time.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
      "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
    tar -C "$root" --numeric-owner -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$root"; trap - EXIT
    say "rootfs cached: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
  fi
  # ------------------------------------------------------------ 2. docker import (once per tarball)
  digest="$(stat -c '%s-%Y' "$TARBALL")"
  have="$(docker image inspect -f '{{ index .Config.Labels "dockyard.rootfs" }}' "$LOCAL_BASE" 2>/dev/null || true)"
  if [ "$have" != "$key-$digest" ]; then
    say "docker import $TARBALL as $LOCAL_BASE"
    docker import -c "LABEL dockyard.rootfs=$key-$digest" -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' \
      "$TARBALL" "$LOCAL_BASE" >/dev/null || die "docker import failed"
  fi
  BASE_IMAGE="$LOCAL_BASE"
fi

# -------------------------------------------------------------- 3. the wheelhouse (host side)
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
PIP="${DOCKYARD_PIP:-$REPO/.venv/bin/pip}"
[ -x "$PIP" ] || PIP="$(command -v pip3 || true)"
[ -n "$PIP" ] || die "pip is required to build the wheelhouse (scripts/bootstrap.sh creates .venv)"
# The wheels must fit the image's Python (bookworm and python:3.11-slim: 3.11): a 3.11 pip builds them.
"$PIP" --version | grep -q "(python 3.11)" \
  || die "$PIP is not Python 3.11's ($("$PIP" --version)): set DOCKYARD_PIP to a Python 3.11 pip"
say "pip wheel: dockyard and its runtime dependencies"
# Offline from the cached wheels (setuptools too: it builds the project's wheel) into exactly the
# resolved set; the package index only when something is missing there (the first build, a new
# dependency), which fills the cache.
mkdir -p "$CACHE/wheels"
: >"$CACHE/pip-wheel.log"
wheel() { "$PIP" wheel -q --disable-pip-version-check --find-links "$CACHE/wheels" "$@" >>"$CACHE/pip-wheel.log" 2>&1; }
if ! wheel --no-index --wheel-dir "$ctx/all" "$REPO"; then
  say "pip wheel: filling the wheel cache $CACHE/wheels from the package index"
  wheel --wheel-dir "$CACHE/wheels" "$REPO" "setuptools>=68" \
    && rm -rf "$ctx/all" && wheel --no-index --wheel-dir "$ctx/all" "$REPO" \
    || { tail -n 20 "$CACHE/pip-wheel.log" >&2; die "pip wheel failed (log: $CACHE/pip-wheel.log)"; }
fi
# The dependencies go into one layer (docker keeps it while they do not change), the project's own
# wheel, built from this tree, into the next.
mkdir -p "$ctx/deps" "$ctx/app"
mv "$ctx"/all/dockyard-*.whl "$ctx/app/"
mv "$ctx"/all/*.whl "$ctx/deps/"
cp "$REPO/Dockerfile" "$ctx/Dockerfile"

# -------------------------------------------------------------- 4. docker build
say "docker build $IMAGE (FROM $BASE_IMAGE)"
docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" "$ctx" >"$CACHE/docker-build.log" 2>&1 \
  || { tail -n 30 "$CACHE/docker-build.log" >&2; die "docker build $IMAGE failed (log: $CACHE/docker-build.log)"; }
if [ "$BASE_IMAGE" = "$LOCAL_BASE" ]; then
  say "docker build $MOSQUITTO_IMAGE (FROM $LOCAL_BASE)"
  docker build --build-arg "BASE_IMAGE=$LOCAL_BASE" -t "$MOSQUITTO_IMAGE" "$REPO/deploy/mosquitto" \
    >>"$CACHE/docker-build.log" 2>&1 \
    || { tail -n 30 "$CACHE/docker-build.log" >&2; die "docker build $MOSQUITTO_IMAGE failed (log: $CACHE/docker-build.log)"; }
fi
say "built $IMAGE$([ "$BASE_IMAGE" = "$LOCAL_BASE" ] && echo " and $MOSQUITTO_IMAGE") in $((SECONDS - t0)) s"
