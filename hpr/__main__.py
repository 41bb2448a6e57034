"""``python -m hpr config``: what this installation has — version, compiled kernels and OpenMP, the MPI
library, mpi4py, thread counts, CuPy, GPUs and CUDA-aware MPI — and how allreduce picks its algorithm.
Under mpiexec, rank 0 prints it for the real world size. Without the compiled kernels (e.g. hpr imported
from its source tree) it says so, with what to do, and exits with 1."""
import os
import sys
from importlib import metadata

import hpr
from hpr.cpu import blas_info, blas_summary, cpu_kernels, cpu_model, isa_summary, num_threads


def config():
    lines = [f"hpr {hpr.__version__} ({os.path.dirname(os.path.abspath(hpr.__file__))})"]
    try:
        info = cpu_kernels().info()
        lines.append(f"compiled kernels: yes (hpr._kernels), OpenMP: {'yes' if info['openmp'] else 'no'}"
                     f", OpenMP max threads: {info['omp_max_threads']}")
        lines.append(isa_summary())
        kernels = True
    except hpr.HprError as e:
        lines.append(f"compiled kernels: MISSING — {e}")
        kernels = False
    try:
        import mpi4py  # lazy: report a missing or broken mpi4py instead of failing to start
        from mpi4py import MPI  # lazy: the same, and importing it initialises MPI
    except ImportError as e:
        lines.append(f"mpi4py: MISSING ({e}); pip install mpi4py mpich")
        print("\n".join(lines))
        return 1
    lib = MPI.Get_library_version().splitlines()[0].strip()
    levels = {MPI.THREAD_SINGLE: "single", MPI.THREAD_FUNNELED: "funneled",
              MPI.THREAD_SERIALIZED: "serialized", MPI.THREAD_MULTIPLE: "multiple"}
    lines.append(f"MPI library: {lib} (MPI {'.'.join(map(str, MPI.Get_version()))}); "
                 f"thread level: {levels.get(MPI.Query_thread(), '?')}")
    lines.append(f"mpi4py: {mpi4py.__version__}")
    if not kernels:  # hpr.init() needs them: say what is missing rather than fail in a traceback
        print("\n".join(lines))
        return 1
    comm = hpr.init()
    lines.append(f"threads: hpr kernels {num_threads()} per rank; cores {os.cpu_count()} ({cpu_model()}); "
                 f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}; BLAS {blas_info()} "
                 "(held to 1 thread: matmuls split rows over hpr's threads)")
    lines.append(blas_summary())
    lines.append(f"CuPy: {hpr.device.cupy_status()}")
    aware, how = hpr.device.cuda_aware()
    n_gpu = hpr.device.gpu_count()
    lines.append(f"CUDA-aware MPI: {'yes' if aware else 'no'} ({how}); --device gpu "
                 + ("passes device buffers to MPI" if aware else "stages them through pinned host memory")
                 + (f"; rank 0 would use GPU {comm.local_rank % n_gpu} of {n_gpu}" if n_gpu else ""))
    lines.append(f"optional: {_optional()}")
    lines.append(f"world: {comm.size} ranks on {comm.layout.nodes} node(s)")
    c = comm.config  # the settings in use (hpr.config read them from HPR_*)
    lines.append(f"settings: timeout {c.timeout:g} s, allreduce {c.allreduce or 'auto'}, check {'on' if c.check else 'off'}, "
                 f"spin {'auto' if c.spin_us is None else f'{c.spin_us:g} us'}, shm slot {c.shm_slot_kb} KiB, "
                 f"node size {c.node_size or 'real nodes'}")
    model = comm.cost_model
    lines.append("allreduce algorithm by message size (alpha-beta model):")
    if comm.size > 1:
        lines.append(f"  this world ({comm.size} ranks): " + _fmt(model.thresholds(comm.size, comm.layout)))
    for p in (2, 6, 8, 48):
        lines.append(f"  {p:>3} ranks between nodes: " + _fmt(model.pt2pt_thresholds(p)))
    lines.append("  ranks on one node: shm (the shared-memory engine) at every size")
    if comm.rank == 0:
        print("\n".join(lines))
    return 0


def _fmt(th):
    def human(n):
        for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if n >= k:
                return f"{n // k} {unit}"
        return f"{n} B"

    return ", ".join(f"{algo} from {human(n)}" for n, algo in th)


def _optional():
    """The optional packages hpr uses when present, with their versions."""
    out = []
    for pkg, why in (("matplotlib", "bench all charts"), ("ml_dtypes", "bfloat16 checks"),
                     ("torch", "benchmark reference"), ("qulacs", "quantum reference"),
                     ("pennylane_lightning", "quantum reference")):
        try:
            out.append(f"{pkg} {metadata.version(pkg.replace('_', '-'))} ({why})")
        except metadata.PackageNotFoundError:
            out.append(f"{pkg} no")
    return ", ".join(out)



def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["config"]:
        return config()
    print("usage: python -m hpr config\n       python -m hpr.bench <what>   (benchmarks)")
    return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main())
