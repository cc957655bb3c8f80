#!/usr/bin/env bash
# The two SageMaker Python SDKs the image is tested against, each in its own venv (never the
# project's: the SDKs pin boto3/protobuf/pydantic ranges of their own).
#
#   docker/sagemaker-sdks.sh [DIR]     DIR/v2 (sagemaker 2.x: Estimator) and DIR/v3 (3.x: ModelTrainer);
#                                      default runs/sagemaker-sdks. Reused when already installed.
# Local mode runs the jobs with docker-compose (Debian's 1.29: `apt-get install -y docker-compose`).
set -euo pipefail
DIR="${1:-runs/sagemaker-sdks}"
PYTHON="${PYTHON:-python3}"
SDK_V2="${SAGEMAKER_V2_VERSION:-2.257.7}"
SDK_V3="${SAGEMAKER_V3_VERSION:-3.27.0}"

install_sdk() {
  local venv="$1" version="$2"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import importlib.metadata as m, sys; \
sys.exit(m.version('sagemaker') != '$version')" 2>/dev/null; then
    echo "[sagemaker-sdks] $venv: sagemaker $version present"; return
  fi
  echo "[sagemaker-sdks] $venv: installing sagemaker==$version"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "sagemaker==$version"
}

mkdir -p "$DIR"
install_sdk "$DIR/v2" "$SDK_V2"
install_sdk "$DIR/v3" "$SDK_V3"
