"""Quantum parallelism: batches of state vectors advanced by one vectorised kernel call per gate
(StateVector), parameterised circuits compiled to one kernel call per batch with adjoint gradients
(Circuit), one large state sharded over ranks (DistributedStateVector), the gate vocabulary of
qelib1.inc, stdgates.inc and Qiskit's exports (GATES), OpenQASM 2 and 3 circuits with measure, reset
and if run as batched shots (hpr.quantum.qasm, hpr.quantum.simulate).
Usage: ``from hpr.quantum import StateVector; sv = StateVector(4, batch=1024)``"""
from .circuit import Circuit
from .distributed import DistributedStateVector
from .gates import GATES
from .statevec import StateVector

__all__ = ["StateVector", "Circuit", "DistributedStateVector", "GATES"]
