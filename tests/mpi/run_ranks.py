"""Run the MPI tests on every rank of an mpiexec job: ``mpiexec -n N python tests/mpi/run_ranks.py``.

Rank 0's pytest report goes to the terminal; every other rank's goes to a file under HPR_TEST_LOGS
(default tests/mpi/logs/). At the end the ranks compare results: the job fails when any rank failed,
and rank 0 names the ranks that did and where their reports are."""
import os
import sys

import pytest
from mpi4py import MPI


def main():
    comm = MPI.COMM_WORLD
    here = os.path.dirname(os.path.abspath(__file__))
    logs = os.environ.get("HPR_TEST_LOGS") or os.path.join(here, "logs")
    log = None
    if comm.rank != 0:
        os.makedirs(logs, exist_ok=True)
        log = os.path.join(logs, f"rank{comm.rank}-of-{comm.size}.txt")
        f = open(log, "w")
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        sys.stdout = sys.stderr = f
    extra = [a for a in sys.argv[1:] if comm.rank == 0 or not a.startswith("--junitxml")]
    args = [here, "--with-mpi", "-q", "-p", "no:cacheprovider", "-o", "console_output_style=classic", *extra]
    code = int(pytest.main(args))
    sys.stdout.flush()
    results = comm.gather((code, log), root=0)
    failed = []
    if comm.rank == 0:
        failed = [(r, c, lg) for r, (c, lg) in enumerate(results) if c not in (0,)]
        for r, c, lg in failed:
            print(f"rank {r} of {comm.size}: pytest exit code {c}" + (f" (report: {lg})" if lg else ""))
        print(f"mpi tests at {comm.size} ranks: {'FAILED on ' + str(len(failed)) + ' rank(s)' if failed else 'passed on every rank'}")
        sys.stdout.flush()
    worst = comm.bcast(max([c for _, c, _ in failed], default=0), root=0)
    return worst


if __name__ == "__main__":
    sys.exit(main())
