#!/usr/bin/env bash
# Build the project image: one image for every step, installing exactly a lock.
#
#   docker/build.sh [--offline] [--cuda] [--tag TAG] [--base-image IMAGE]
#
#   --offline     install from wheelhouse/<variant>/ only: this host downloads the lock's files
#                 first (python -m tools.wheelhouse: pip download --require-hashes, each file's hash
#                 checked against the lock), no network during `docker build`
#   --cuda        CUDA variant: requirements/image-cuda.lock (PyPI's torch and its nvidia-* wheels)
#                 instead of requirements/image-cpu.lock (torch's +cpu wheel); same base
#   --tag         image tag (default: $OPENEDS_IMAGE or openeds-steps:latest)
#   --base-image  base image with python3.11 + venv (default: local/debian-python:bookworm when
#                 present, else python:3.11-slim-bookworm); name@sha256:<digest> is used as given
#
# The base is pinned before the build: a tag is resolved to its registry digest (name@sha256:...)
# when the image came from a registry, else to its image ID (sha256:...: the local mmdebstrap base),
# and the image is built FROM that reference and labelled with it (org.opencontainers.image.base.*)
# and with the lock's sha256 (openeds.lock.sha256).
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
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "[build] $*" >&2; }

repository() {
  # The repository of a reference, as RepoDigests spell it: no tag, no digest, docker.io/library/ dropped.
  local ref="${1%@*}" last
  last="${ref##*/}"
  case "$last" in *:*) ref="${ref%:*}" ;; esac
  ref="${ref#docker.io/}"; ref="${ref#index.docker.io/}"; ref="${ref#library/}"
  echo "$ref"
}

resolve_base() {
  # BASE_FROM: the immutable reference FROM uses; BASE_NAME, BASE_DIGEST: the labels.
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if [ "$OFFLINE" -eq 1 ]; then
      log "base image $BASE_IMAGE is not here and an offline build pulls nothing (docker pull it first)"; exit 1
    fi
    log "pulling $BASE_IMAGE"; docker pull "$BASE_IMAGE" >/dev/null
  fi
  case "$BASE_IMAGE" in
    *@sha256:*)  # pinned by the caller: used as given
      BASE_FROM="$BASE_IMAGE"; BASE_NAME="${BASE_IMAGE%@*}"; BASE_DIGEST="${BASE_IMAGE##*@}" ;;
    sha256:*)  # an image ID
      BASE_FROM="$BASE_IMAGE"; BASE_NAME="$BASE_IMAGE"; BASE_DIGEST="$BASE_IMAGE" ;;
    *)
      local repo digest
      repo="$(repository "$BASE_IMAGE")"
      digest="$(docker image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$BASE_IMAGE" \
        | awk -F@ -v repo="$repo" '$1 == repo { print $2; exit }')"
      BASE_NAME="$BASE_IMAGE"
      if [ -n "$digest" ]; then  # pulled from a registry: its manifest digest
        BASE_FROM="$repo@$digest"; BASE_DIGEST="$digest"
      else  # built or imported here (local/debian-python:bookworm): no registry digest, its image ID
        BASE_DIGEST="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")"; BASE_FROM="$BASE_DIGEST"
      fi ;;
  esac
}

VARIANT=cpu
[ "$CUDA" -eq 1 ] && VARIANT=cuda
LOCK="requirements/image-$VARIANT.lock"
args=()
if [ "$CUDA" -eq 0 ]; then
  # torch's +cpu wheel is on PyTorch's CPU index, not PyPI (an online build; offline it is in the wheelhouse).
  args+=(--build-arg "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")
fi
if [ -z "$BASE_IMAGE" ]; then
  if docker image inspect local/debian-python:bookworm >/dev/null 2>&1; then
    BASE_IMAGE=local/debian-python:bookworm
  else
    BASE_IMAGE=python:3.11-slim-bookworm
  fi
fi
resolve_base
mkdir -p "wheelhouse/$VARIANT"
if [ "$OFFLINE" -eq 1 ]; then
  log "wheelhouse/$VARIANT/ from $LOCK"
  "$PYTHON" -m tools.wheelhouse "$LOCK" "wheelhouse/$VARIANT"
  args+=(--build-arg "PIP_OFFLINE=1")
fi
LOCK_SHA256="$(sha256sum "$LOCK" | cut -d' ' -f1)"
log "base $BASE_NAME -> FROM $BASE_FROM"
log "building $TAG from $LOCK (offline=$OFFLINE)"
started=$(date +%s)
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
[ -z "$(git status --porcelain 2>/dev/null)" ] || REVISION="$REVISION-dirty"
VERSION="$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
args+=(--build-arg "REVISION=$REVISION" --build-arg "VERSION=$VERSION")
DOCKER_BUILDKIT=0 docker build --network "$([ "$OFFLINE" -eq 1 ] && echo none || echo default)" \
  --build-arg "BASE_IMAGE=$BASE_FROM" --build-arg "BASE_NAME=$BASE_NAME" --build-arg "BASE_DIGEST=$BASE_DIGEST" \
  --build-arg "VARIANT=$VARIANT" --build-arg "LOCK_SHA256=$LOCK_SHA256" "${args[@]}" -f docker/Dockerfile -t "$TAG" .
log "built $TAG in $(( $(date +%s) - started ))s; size $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.2f GB", $1/1e9}')"
