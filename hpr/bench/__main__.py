"""``python -m hpr.bench <what> [options]``; ``python -m hpr.bench --help`` lists what there is (the table
is hpr.bench.BENCHES)."""
import importlib
import sys

from . import BENCHES, ResultsDisagree


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
    mod = importlib.import_module(BENCHES[argv[0]][0])  # only the benchmark asked for is imported
    try:
        return mod.main(argv[1:])
    except ResultsDisagree as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
