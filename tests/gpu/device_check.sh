#!/usr/bin/env bash
# The GPU checks of issue 7, as one script for the device machine (device tool's `run`, from the repo
# root; nothing can be downloaded there: its image has CuPy, Cython, setuptools, numpy, pytest, mpi4py):
#   bash tests/gpu/device_check.sh
# Builds hpr with the setuptools backend (no meson-python there) into /tmp/site, then, each step under
# its own time limit so one slow step cannot eat the others' time:
#   1. the GPU parity tests (each CUDA kernel against its numpy twin; the GPT, state vectors and compiled
#      circuits on the GPU against the CPU);
#   2. python -m hpr.bench quantum-kernels --device gpu (gate bandwidth vs the GPU's copy; batched workload);
#   3. python -m hpr.bench train --device gpu (tokens/s, MFU vs cuBLAS fp32 / fp16 matmul);
#   4. when mpi4py finds an MPI library: python -m hpr config (CuPy, GPUs, CUDA-aware MPI), the trainer
#      on the GPU on the built-in corpus (1 rank), and, if mpiexec exists, the device allreduce benchmark
#      and the trainer on 2 ranks sharing the GPU.
# Step limits add up to about 420 s, under the device tool's 600 s per command with the build.
# Logs and JSON go to $OUT. Exits 0 only when every step that ran exited 0; else 1, naming the failed
# steps on the last line (a step past its limit counts as failed: timeout's exit 124).
set -uo pipefail
FAILED=""
OUT=${OUT:-/tmp/hpr-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HPR_CACHE_DIR=/tmp/hpr-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt" || FAILED+=" nvidia-smi"
t0=$(date +%s)
HPR_BUILD_BACKEND=setuptools python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/site . \
    > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
REPO=$(pwd)
cd /tmp
step() {  # step NAME LIMIT_S command...
    local name=$1 limit=$2; shift 2
    local s=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc, $(( $(date +%s) - s )) s"; tail -n 25 "$OUT/$name.log"
    [ "$rc" -eq 0 ] || FAILED+=" $name"
}
# nvcc and NVRTC compiles are CI's (tests/test_cuda_sources.py); here only what needs the GPU
step gpu_tests 90 python3 -m pytest -q -p no:cacheprovider -rs "$REPO/tests/test_gpu.py"
step bench_quantum 90 python3 -m hpr.bench quantum-kernels --device gpu --max-qubits 28 --budget 0.1 \
    --json "$OUT/quantum_gpu.json"
step bench_train 60 python3 -m hpr.bench train --device gpu --preset M --batch 64 --steps 8 --json "$OUT/train_gpu.json"
# the trainer needs an MPI library under mpi4py; Open MPI refuses root without these
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if python3 -c "from mpi4py import MPI" > "$OUT/mpi_probe.log" 2>&1; then
    step config 20 python3 -m hpr config
    step train_1rank 75 python3 -m hpr.train --device gpu --preset S --steps 60 --batch 64 --eval-every 0 \
        --eval-batches 4 --sample-tokens 60 --log-json "$OUT/train_1rank.json"
    if command -v mpiexec > /dev/null; then  # 2 ranks share the one GPU
        step bench_allreduce 40 mpiexec -n 2 python3 -m hpr.bench allreduce --device gpu --max-bytes 64M \
            --budget 0.1 --json "$OUT/allreduce_gpu.json"
        step train_2ranks 45 mpiexec -n 2 python3 -m hpr.train --device gpu --preset S --steps 30 --batch 64 \
            --eval-every 0 --eval-batches 4 --sample-tokens 0
    fi
else
    echo "== no usable MPI under mpi4py here (see mpi_probe.log): config and trainer steps skipped"; cat "$OUT/mpi_probe.log"
fi
echo "total: $(( $(date +%s) - t0 )) s"
if [ -n "$FAILED" ]; then
    echo "FAILED:$FAILED"
    exit 1
fi
echo "all steps passed"
