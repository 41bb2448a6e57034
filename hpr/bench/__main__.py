"""``python -m hpr.bench <what> [options]``; ``python -m hpr.bench --help`` lists what there is."""
import importlib
import sys

BENCHES = {
    "allreduce": ("hpr.bench.allreduce", "hpr's allreduce against MPI_Allreduce, 8 B to 256 MiB"),
    "dp": ("hpr.bench.dp", "data-parallel weak scaling over 1, 2, 4.. ranks, beside PyTorch DDP when installed"),
    "layouts": ("hpr.bench.layouts", "every dp x tp x pp layout of the world: tokens/s, memory, bubble, bytes per axis"),
    "oversubscribe": ("hpr.bench.oversubscribe", "a computing rank beside ranks waiting in hpr's vs MPI's barrier"),
    "quantum": ("hpr.bench.quantum", "state-vector gates at 16-22 qubits: time, GB/s beside numpy's copy; a batched workload"),
    "train": ("hpr.bench.train", "one GPT training step: tokens/s and MFU, beside PyTorch eager when installed"),
    "all": ("hpr.bench.report", "all of the above at sizes for this machine: a Markdown report and charts (--out DIR)"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHES:
        print("usage: python -m hpr.bench <what> [options]   (under mpiexec for the parallel ones)\n")
        for k, (_, doc) in BENCHES.items():
            print(f"  {k:<14} {doc}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown benchmark {argv[0]!r}")
            return 2
        return 0
    mod = importlib.import_module(BENCHES[argv[0]][0])
    return mod.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
