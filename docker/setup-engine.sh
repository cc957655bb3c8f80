#!/usr/bin/env bash
# Make a Docker engine available and build the local base image (SPEC section 5).
#
#   docker/setup-engine.sh            install docker.io + mmdebstrap if needed, start dockerd, build
#                                     local/debian-python:bookworm if it is missing
#
# When an engine already answers `docker info`, it is used as is and nothing is started.
# When this script starts dockerd, it writes dockerd's PID to $DOCKERD_PIDFILE (default
# runs/dockerd.pid); the caller stops that PID at the end (`.ci/run` does, in a trap).
# No registry is reachable here, so the base image is bootstrapped from Debian packages.
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-local/debian-python:bookworm}"
DOCKERD_PIDFILE="${DOCKERD_PIDFILE:-runs/dockerd.pid}"
DOCKERD_LOG="${DOCKERD_LOG:-runs/dockerd.log}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# The engine is Docker 20.10 and the 28.x client here has no buildx: use the classic builder.
export DOCKER_BUILDKIT=0

log() { echo "[setup-engine] $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

engine_up() { docker info >/dev/null 2>&1; }

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v docker >/dev/null 2>&1 || { log "no docker client after install"; exit 1; }
}

start_engine() {
  mkdir -p "$(dirname "$DOCKERD_PIDFILE")" "$(dirname "$DOCKERD_LOG")"
  log "starting dockerd (log: $DOCKERD_LOG)"
  # Started directly (not through a function) so $! is dockerd's own PID (or sudo's, which
  # forwards SIGTERM to it).
  if [ "$(id -u)" -eq 0 ]; then
    dockerd >"$DOCKERD_LOG" 2>&1 &
  else
    sudo dockerd >"$DOCKERD_LOG" 2>&1 &
  fi
  echo $! >"$DOCKERD_PIDFILE"
  local waited=0
  until engine_up; do
    if ! kill -0 "$(cat "$DOCKERD_PIDFILE")" 2>/dev/null; then
      log "dockerd exited; last log lines:"; tail -n 20 "$DOCKERD_LOG" >&2; exit 1
    fi
    if [ "$waited" -ge 60 ]; then log "dockerd did not answer within 60 s"; exit 1; fi
    sleep 1; waited=$((waited + 1))
  done
  log "dockerd up (pid $(cat "$DOCKERD_PIDFILE"), ${waited}s)"
}

build_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE present"; return
  fi
  log "bootstrapping $BASE_IMAGE with mmdebstrap (about a minute)"
  # tar to stdout, imported as a single-layer image: no registry needed.
  as_root mmdebstrap --quiet --variant=apt \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm - "deb $DEBIAN_MIRROR bookworm main" | docker import - "$BASE_IMAGE" >/dev/null
  log "built $BASE_IMAGE"
}

main() {
  if engine_up; then
    log "a Docker engine is already running; using it"
    rm -f "$DOCKERD_PIDFILE"
  else
    install_packages
    start_engine
  fi
  command -v mmdebstrap >/dev/null 2>&1 || docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || install_packages
  build_base_image
}

main "$@"
