"""Quantum parallelism: batches of state vectors advanced by one vectorised kernel call per gate
(StateVector), the qelib1 gate vocabulary (gates). Usage:
``from hpr.quantum import StateVector; sv = StateVector(4, batch=1024)``"""
from .gates import GATES
from .statevec import StateVector
from .distributed import DistributedStateVector

__all__ = ["StateVector", "DistributedStateVector", "GATES"]
