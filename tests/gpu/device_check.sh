#!/usr/bin/env bash
# The GPU checks of issue 7, as one script for the device machine (device tool's `run`, from the repo
# root; nothing can be downloaded there: its image has CuPy, Cython, setuptools, numpy, pytest):
#   bash tests/gpu/device_check.sh
# Builds hpr with the setuptools backend (no meson-python there) into /tmp/site, runs the GPU parity
# tests and the CUDA-source tests, then times the batched quantum workload on the GPU. Logs go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/hpr-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
HPR_BUILD_BACKEND=setuptools python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/site . \
    > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
export PYTHONPATH=/tmp/site
cd tests
python3 -m pytest -q -p no:cacheprovider test_gpu.py test_cuda_sources.py 2>&1 | tee "$OUT/gpu_tests.log"
python3 - <<'PY' 2>&1 | tee "$OUT/gpu_quantum.log"
import time, numpy as np, cupy as cp
from hpr.bench.quantum import workload
from hpr.kernels import gpu
c = workload(); prog = c.compile()
for B in (1024, 65536, 1048576):
    x = cp.asarray(np.random.default_rng(0).uniform(-3, 3, (B, c.n))); w = cp.asarray(np.zeros(c.n_weights))
    s = cp.zeros((B, 1 << c.n), cp.complex64); args = (cp.asarray(prog.ops), cp.asarray(prog._mats(np.complex64)),
                                                       cp.asarray(prog.fixed), x, w)
    gpu.run_program(s, *args); cp.cuda.Device().synchronize()
    t = time.perf_counter(); reps = 5
    for _ in range(reps):
        s[:] = 0; s[:, 0] = 1; gpu.run_program(s, *args)
    cp.cuda.Device().synchronize(); dt = (time.perf_counter() - t) / reps
    print(f"batched workload forward, complex64, {B} circuits: {B / dt:,.0f} circuits/s (target 1e6)")
PY
