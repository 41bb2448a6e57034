#!/usr/bin/env bash
# The GPU checks of issue 7, as one script for the device machine (device tool's `run`, from the repo
# root; nothing can be downloaded there: its image has CuPy, Cython, setuptools, numpy, pytest, mpi4py):
#   bash tests/gpu/device_check.sh
# Builds hpr with the setuptools backend (no meson-python there) into /tmp/site, then, each step under
# its own time limit so one slow step cannot eat the others' time:
#   1. the GPU parity tests (each CUDA kernel against its numpy twin; the GPT, state vectors and compiled
#      circuits on the GPU against the CPU) and the CUDA-source tests;
#   2. python -m hpr config (CuPy, GPUs, CUDA-aware MPI);
#   3. python -m hpr.bench quantum --device gpu (gate bandwidth vs the GPU's copy; batched workload);
#   4. python -m hpr.bench train --device gpu (tokens/s, MFU vs cuBLAS fp32 / fp16 matmul);
#   5. the trainer on the GPU on the built-in corpus (1 rank; 2 ranks sharing the GPU if mpiexec exists).
# Logs and JSON go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/hpr-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HPR_CACHE_DIR=/tmp/hpr-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
HPR_BUILD_BACKEND=setuptools python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/site . \
    > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
export PYTHONPATH=/tmp/site
REPO=$(pwd)
cd /tmp
step() {  # step NAME LIMIT_S command...
    local name=$1 limit=$2; shift 2
    local s=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc, $(( $(date +%s) - s )) s"; tail -n 25 "$OUT/$name.log"
}
step gpu_tests 120 python3 -m pytest -q -p no:cacheprovider "$REPO/tests/test_gpu.py" "$REPO/tests/test_cuda_sources.py"
step config 20 python3 -m hpr config
step bench_quantum 120 python3 -m hpr.bench quantum --device gpu --max-qubits 28 --json "$OUT/quantum_gpu.json"
step bench_train 90 python3 -m hpr.bench train --device gpu --preset M --batch 64 --steps 8 --json "$OUT/train_gpu.json"
step train_1rank 90 python3 -m hpr.train --device gpu --preset S --steps 60 --batch 64 --eval-every 0 \
    --eval-batches 4 --sample-tokens 60 --log-json "$OUT/train_1rank.json"
if command -v mpiexec > /dev/null; then
    step train_2ranks 60 mpiexec -n 2 python3 -m hpr.train --device gpu --preset S --steps 30 --batch 64 \
        --eval-every 0 --eval-batches 4 --sample-tokens 0
fi
echo "total: $(( $(date +%s) - t0 )) s"
