"""Every hpr Communicator a test makes with Communicator.split (its ProcessGrid's dp, tp, pp and tied
groups, a Run's grid) is freed after the test, collectively, in the order made backwards. MPICH gives a
process 2048 communicator context ids; the 8-rank suite builds several hundred grids, each a few
communicators and their duplicates, and ran out of them before this (MPI_Comm_split: "Too many
communicators"). A trainer builds one grid and keeps it, so the product never meets the limit."""
import pytest

from hpr.comm import Communicator


@pytest.fixture(autouse=True)
def free_split_communicators(monkeypatch):
    made = []
    split = Communicator.split

    def tracked(self, color, key=0):
        sub = split(self, color, key)
        if sub is not None:
            made.append(sub)
        return sub

    monkeypatch.setattr(Communicator, "split", tracked)
    yield
    for c in reversed(made):
        c.free()
