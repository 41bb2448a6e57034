"""The Communicator on one rank (COMM_SELF), its settings, and the cost model's plan: no mpiexec needed."""
import ast
import os
import time

import numpy as np
import pytest
from mpi4py import MPI

import hpr
from hpr.comm import Communicator, CostModel
from hpr.comm.cost import NodeLayout
from hpr.config import CommConfig


def test_one_rank_collectives_are_identities():
    comm = hpr.init(MPI.COMM_SELF)
    x = np.arange(10, dtype=np.float32)
    assert comm.allreduce(x.copy(), "avg").tolist() == x.tolist()
    assert comm.reduce_scatter(x.reshape(5, 2)).tolist() == x.reshape(5, 2).tolist()
    assert comm.allgather(x).tolist() == x.tolist()
    assert comm.broadcast(x.copy()).tolist() == x.tolist()
    comm.barrier()


def test_cost_model_plan():
    m = CostModel()
    # between nodes: latency-bound recursive doubling for small, bandwidth-optimal ring for large
    assert m.choose(8, 8) == "recursive_doubling"
    assert m.choose(256 << 20, 6) == "ring"  # not a power of two: no folding
    assert m.choose(256 << 20, 8) in ("rabenseifner", "ring")  # same bandwidth term at a power of two
    th = m.pt2pt_thresholds(6)
    assert th[0] == (1, "recursive_doubling") and th[-1][1] == "ring"
    assert [n for n, _ in th] == sorted(n for n, _ in th)
    # one node: the shared-memory engine at every size
    one = NodeLayout(1, 4)
    assert {m.choose(n, 4, one) for n in (8, 1 << 16, 1 << 28)} == {"shm"}
    # several equal nodes: hierarchical for large messages
    assert m.choose(64 << 20, 16, NodeLayout(4, 4)) == "hierarchical"
    # predicted times grow with the message
    for algo in ("recursive_doubling", "rabenseifner", "ring"):
        assert m.time(algo, 1 << 20, 8) < m.time(algo, 1 << 24, 8)


def test_world_before_init_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(hpr, "_world", None)
    with pytest.raises(hpr.HprError, match="hpr.init"):
        hpr.world()


def test_settings_come_from_the_config_given():
    """A Communicator runs with the CommConfig it is given (default: hpr.config.current().comm), timeout=
    overrides its deadline, and split() hands the settings on."""
    comm = Communicator(MPI.COMM_SELF)
    assert comm.config == hpr.config.current().comm and comm.timeout == comm.config.timeout
    cfg = CommConfig(timeout=12.5, allreduce="ring", shm_slot_kb=64, check=True)
    c = Communicator(MPI.COMM_SELF, timeout=7, config=cfg)
    assert c.timeout == 7.0 and c.config == cfg.replace(timeout=7.0)
    assert c.cost_model.slot_bytes == 64 << 10
    assert (c.local_rank, c.local_size) == (0, 1)
    sub = c.split(0)
    assert sub.config == c.config and sub.timeout == 7.0
    for x in (sub, c):
        x.free()
    # the forced algorithm reaches the channel: one rank cannot pretend to be several nodes
    with pytest.raises(hpr.ConfigError, match="hierarchical needs several nodes"):
        Communicator(MPI.COMM_SELF, config=CommConfig(allreduce="hierarchical"))
    with pytest.raises(hpr.ConfigError, match="CommConfig"):
        Communicator(MPI.COMM_SELF, config={"timeout": 5})


def test_each_communicator_waits_with_its_own_spin():
    """A wait spins for its own communicator's spin before it sleeps, whichever communicator was made
    last (the spin once was a process-wide setting, decided by the newest communicator). Seen in the
    CPU time a wait for a message that never comes takes: spinning costs CPU, sleeping does not."""
    # over duplicates: the timed-out receives stay attached to them, not to MPI's own COMM_SELF
    spinning = Communicator(MPI.COMM_SELF.Dup(), config=CommConfig(timeout=1.0, spin_us=800_000))
    sleeping = Communicator(MPI.COMM_SELF.Dup(), config=CommConfig(timeout=1.0, spin_us=0))

    def cpu_seconds_of_a_lost_wait(comm):
        t0 = time.process_time()
        with pytest.raises(hpr.CommTimeout, match="irecv #1"):
            comm.recv(np.empty(4), 0, tag=99)  # nobody sends it
        return time.process_time() - t0

    slept, spun = cpu_seconds_of_a_lost_wait(sleeping), cpu_seconds_of_a_lost_wait(spinning)
    # the sleeping wait costs ~10 ms of CPU in a second; the spinning one 0.8 s of a core when the
    # machine is idle, and still several times the sleeper's on a machine shared 10 ways
    assert slept < 0.1, slept
    assert spun > 4 * slept + 0.03, (spun, slept)
    for c in (spinning, sleeping):
        c.free()


def test_comm_reads_no_environment():
    """Settings come down as a CommConfig: no module of hpr.comm reads os.environ itself."""
    here = os.path.dirname(hpr.comm.__file__)
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            tree = ast.parse(open(os.path.join(here, name)).read())
            used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
            used |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            assert not used & {"environ", "getenv"}, f"hpr/comm/{name} reads the environment"


def test_a_timed_out_request_is_freed():
    """wait_all cancels what is still in flight at the deadline and completes or frees it: no request
    handle is left behind."""
    from hpr.comm.wait import OpContext, wait_all

    buf = np.empty(4, np.float64)
    req = MPI.COMM_SELF.Irecv(buf, 0, tag=77)  # nobody sends
    t0 = time.perf_counter()
    with pytest.raises(hpr.CommTimeout, match="irecv #1"):
        wait_all([req], [0], OpContext("irecv", 1, 0, 1, 0.2))
    assert req == MPI.REQUEST_NULL
    assert time.perf_counter() - t0 < 3


def test_progress_stop_is_bounded_by_the_deadline_and_says_so(capfd):
    """A progress thread stuck in a collective is waited for at most the channel's deadline (+1 s), and
    stop() says on stderr that it did not stop."""
    from hpr.comm.progress import Handle, Progress

    class StuckChannel:
        timeout = 0.3

        def allreduce(self, *args):
            time.sleep(4)

    bg = Progress(StuckChannel())
    bg.submit(Handle(None), None, 0, 0, False)
    time.sleep(0.1)
    t0 = time.perf_counter()
    assert bg.stop() is False
    assert time.perf_counter() - t0 < 2.5
    assert "progress thread did not stop within 1.3 s" in capfd.readouterr().err
