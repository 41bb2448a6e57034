"""The benchmarks' own correctness checks can fail: a wrong sum in the allreduce benchmark and a wrong
kernel in the quantum benchmark's batched workload end the run with ResultsDisagree, and
``python -m hpr.bench`` turns that into an error line and exit 2. (One rank, COMM_SELF: no mpiexec.)"""
import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.bench import ResultsDisagree, allreduce, quantum
from hpr.bench.__main__ import main as bench_main


class OffByOne:
    """A communicator whose allreduce gets one element wrong by `by`."""

    def __init__(self, comm, by):
        self.comm, self.by = comm, by
        self.mpi, self.size, self.rank = comm.mpi, comm.size, comm.rank

    def allreduce(self, x, op="sum"):
        out = self.comm.allreduce(x, op)
        out[len(out) // 2] += self.by
        return out


def test_allreduce_benchmark_checks_its_sums():
    comm = hpr.init(MPI.COMM_SELF)
    shared = comm.alloc(1000, np.float32)
    allreduce.check_sums(comm, 1000, shared)  # right: passes
    for by in (1e-3, np.nan):
        with pytest.raises(ResultsDisagree, match=r"allreduce of 4000 bytes on 1 ranks: hpr .* differs from "
                                                  r"MPI_Allreduce"):
            allreduce.check_sums(OffByOne(comm, by), 1000, shared)


def test_quantum_benchmark_fails_when_hpr_disagrees_with_numpy(monkeypatch):
    bt = quantum.batched(8, 0.01, ())
    assert bt["max_abs_diff"] < 1e-9
    real = quantum.Circuit.forward

    def wrong(self, *a, **k):
        z = real(self, *a, **k)
        return z + 1e-6
    monkeypatch.setattr(quantum.Circuit, "forward", wrong)
    with pytest.raises(ResultsDisagree, match=r"batched workload, hpr against numpy einsum .* disagree .* by 1\.0"):
        quantum.batched(8, 0.01, ())


def test_bench_command_exits_2_when_results_disagree(monkeypatch, capsys):
    def disagree(argv):
        raise ResultsDisagree("allreduce of 8 bytes: wrong")
    monkeypatch.setattr(allreduce, "main", disagree)
    assert bench_main(["allreduce"]) == 2
    assert "error: allreduce of 8 bytes: wrong" in capsys.readouterr().err
