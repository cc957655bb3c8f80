#!/usr/bin/env bash
# Build the project image: one image for every step.
#
#   docker/build.sh [--offline] [--cuda] [--tag TAG] [--base-image IMAGE]
#
#   --offline     install from wheelhouse/ only (built on the host first with `pip wheel`, which
#                 uses this machine's package index): no network during `docker build`
#   --cuda        CUDA variant: an nvidia/cuda base and torch from the PyTorch CUDA index
#   --tag         image tag (default: $OPENEDS_IMAGE or openeds-steps:latest)
#   --base-image  base image with python3 + venv (default: local/debian-python:bookworm when
#                 present, else python:3.11-slim-bookworm)
#
# The engine here is Docker 20.10 without buildx: the classic builder (DOCKER_BUILDKIT=0).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${OPENEDS_IMAGE:-openeds-steps:latest}"
OFFLINE=0
CUDA=0
BASE_IMAGE=""
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python
while [ $# -gt 0 ]; do
  case "$1" in
    --offline) OFFLINE=1 ;;
    --cuda) CUDA=1 ;;
    --tag) TAG="$2"; shift ;;
    --base-image) BASE_IMAGE="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[build] $*" >&2; }

requirements() {
  "$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))'
}

write_requirements() {
  # The image installs exactly pyproject.toml's dependencies; the file is rewritten only when they
  # change, so docker's layer cache keeps the dependency layer across other edits.
  mkdir -p wheelhouse
  requirements >wheelhouse/.requirements.new
  if cmp -s wheelhouse/.requirements.new wheelhouse/requirements.txt; then
    rm wheelhouse/.requirements.new
  else
    mv wheelhouse/.requirements.new wheelhouse/requirements.txt
    rm -f wheelhouse/.complete
  fi
}

build_wheelhouse() {
  # Wheels for the image's python (same cp311 / manylinux x86_64 as this host), built once per
  # dependency list: `pip wheel` uses this machine's package index, the docker build none.
  if [ -f wheelhouse/.complete ]; then
    log "wheelhouse/ complete for these dependencies"; return
  fi
  log "filling wheelhouse/ (pip wheel)"
  "$PYTHON" -m pip wheel --quiet --wheel-dir wheelhouse --find-links wheelhouse \
    -r wheelhouse/requirements.txt pip "setuptools>=77" wheel 2> >(grep -v "is ignored: it is neither" >&2)
  touch wheelhouse/.complete
  log "wheelhouse: $(ls wheelhouse/*.whl | wc -l) wheels, $(du -sh wheelhouse | cut -f1)"
}

args=()
if [ "$CUDA" -eq 1 ]; then
  BASE_IMAGE="${BASE_IMAGE:-nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04}"
  args+=(--build-arg "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128")
fi
if [ -z "$BASE_IMAGE" ]; then
  if docker image inspect local/debian-python:bookworm >/dev/null 2>&1; then
    BASE_IMAGE=local/debian-python:bookworm
  else
    BASE_IMAGE=python:3.11-slim-bookworm
  fi
fi
write_requirements
if [ "$OFFLINE" -eq 1 ]; then
  build_wheelhouse
  args+=(--build-arg "PIP_OFFLINE=1")
fi
log "building $TAG from $BASE_IMAGE (offline=$OFFLINE cuda=$CUDA)"
started=$(date +%s)
DOCKER_BUILDKIT=0 docker build --network "$([ "$OFFLINE" -eq 1 ] && echo none || echo default)" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" "${args[@]}" -f docker/Dockerfile -t "$TAG" .
log "built $TAG in $(( $(date +%s) - started ))s; size $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.2f GB", $1/1e9}')"
