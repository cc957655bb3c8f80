#!/usr/bin/env bash
# The GPU benchmark and CUDA checks on a lent GPU machine (no network there; PyTorch preinstalled):
#
#     bash steps/bench/gpu_run.sh [--quick]      # from the repository root; results in $OUT (or runs/)
#
# What it needs: python with torch (CUDA) and numpy, which the machine has, and cv2. The benchmark
# imports nothing else (see steps/bench/gpu.py): its rows are generated in memory, so datasets,
# pyarrow and pydantic are needed only by the loader comparison, which prints SKIP without them.
#
# Wheels, when the machine lacks cv2 (or to add the loader rows): download them here, into the
# ignored folder wheelhouse/, for the machine's python (print it first: python -V), and carry
# that folder with the run (the working tree and the carried paths travel within 64 MiB):
#
#     pip download --only-binary=:all: --no-deps --platform manylinux_2_28_x86_64 \
#         --python-version 3.12 -d wheelhouse opencv-python-headless==5.0.0.93     # ~50 MB
#
# datasets + pyarrow (and datasets' own dependencies: dill, multiprocess, xxhash, fsspec, pandas,
# huggingface_hub, ...) do not fit beside opencv in 64 MiB (pyarrow alone is ~40 MB): carry them
# only where the machine has cv2 already. Every wheel found in wheelhouse/ is installed offline
# (--no-index --no-deps), nothing is fetched.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT="${OUT:-runs}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

python -V
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if compgen -G "wheelhouse/*.whl" > /dev/null; then
    python -m pip install --quiet --no-index --no-deps wheelhouse/*.whl || echo "wheelhouse: install failed"
fi
python - <<'EOF' || exit 3
import importlib
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}")
for name in ("numpy", "cv2", "datasets", "pyarrow"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {module.__version__}")
    except ImportError as error:
        print(f"{name}: missing ({error})")
        if name in ("numpy", "cv2"):
            raise SystemExit(f"{name} is required: carry its wheel in wheelhouse/ (see steps/bench/gpu_run.sh)")
EOF

timeout "${GPU_BENCH_TIMEOUT:-540}" python -m steps.bench.gpu --json "$OUT/gpu_bench.json" "$@" 2>&1 \
    | tee "$OUT/gpu_bench.log"
exit "${PIPESTATUS[0]}"
