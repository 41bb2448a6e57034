"""hpr's microbenchmarks: ``python -m hpr.bench <what>``. Every benchmark prints, beside each figure, a
reference measured in the same run (MPI's own collective, the same work done alone, ...) and the ratio.
These machines are noisy: read medians and ratios, not single times.

This package's face holds what its modules share: the table of benchmarks (BENCHES, which __main__
dispatches on and report.py plans from), write_json, check_agree (a result that differs from its
reference ends the benchmark with ResultsDisagree: its timings would be of a wrong computation), and the settings of the benchmarks whose idle
ranks wait long (settings_with_timeout). Each benchmark lives in its own module.

Usage: ``python -m hpr.bench --help``; ``from hpr.bench import BENCHES``"""
import json
import os

from .. import config
from ..errors import HprError

# name: (module, what it measures)
BENCHES = {
    "allreduce": ("hpr.bench.allreduce", "hpr's allreduce against MPI_Allreduce, 8 B to 256 MiB"),
    "attention": ("hpr.bench.attention", "fused causal attention, forward + backward, beside torch's "
                  "scaled_dot_product_attention"),
    "data": ("hpr.bench.data", "text to token shards: hpr's prepare beside the tokenizers library's encode_batch"),
    "dp": ("hpr.bench.dp", "data-parallel weak scaling over 1, 2, 4.. ranks, beside PyTorch DDP when installed"),
    "generate": ("hpr.bench.generate", "greedy decoding with the key/value cache, beside recomputation and transformers"),
    "layouts": ("hpr.bench.layouts", "every dp x tp x pp layout of the world: tokens/s, memory, bubble, bytes per axis"),
    "oversubscribe": ("hpr.bench.oversubscribe", "a computing rank beside ranks waiting in hpr's vs MPI's barrier"),
    "quantum": ("hpr.bench.quantum_suite", "issue 21's quantum targets: every 1-qubit gate on every qubit and CNOT pair "
                "classes at n = 22-26 beside Lightning; batched workload beside numpy, PennyLane, JAX; QASM beside Qiskit"),
    "quantum-kernels": ("hpr.bench.quantum", "state-vector gates at 16-24 qubits: time, GB/s beside numpy's copy, "
                        "other simulators; a 20-gate circuit; a batched workload; --device gpu"),
    "scale": ("hpr.bench.scale", "the memory planner's prediction vs measured peak RSS; --recompute memory and time"),
    "train": ("hpr.bench.train", "one GPT training step: tokens/s and MFU, beside PyTorch eager when installed"),
    "all": ("hpr.bench.report", "all of the above at sizes for this machine: a Markdown report and charts (--out DIR)"),
}


class ResultsDisagree(HprError):
    """A benchmark's result differs from its reference by more than the tolerance."""


def check_agree(what, err, tol):
    """err (the largest difference from the reference), or ResultsDisagree naming what when it exceeds
    tol (a NaN too): ``python -m hpr.bench`` then says so and exits 2."""
    if not err <= tol:
        raise ResultsDisagree(f"{what}: results disagree with the reference by {err:.3e}, more than the "
                              f"tolerance {tol:.1e}; the timings would be of a wrong computation")
    return err


def write_json(path, obj):
    """obj as JSON at path, written under a temporary name and renamed (never a half-written file)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def settings_with_timeout(seconds):
    """hpr's settings from the environment (hpr.config.from_env), with HPR_TIMEOUT defaulting to
    `seconds` instead of 300 s: for ``hpr.init(settings=...)`` in a benchmark whose idle ranks wait
    through whole sweeps. An HPR_TIMEOUT the user set still wins; the process environment (and so
    every child process's) is left as it was."""
    return config.from_env({"HPR_TIMEOUT": str(seconds), **os.environ})
