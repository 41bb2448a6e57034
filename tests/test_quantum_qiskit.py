"""Circuits written by Qiskit, read by hpr: random circuits (qiskit.circuit.random.random_circuit, every
gate family up to 4 operands) exported by qiskit.qasm2.dumps and qiskit.qasm3.dumps, simulated by hpr,
against qiskit.quantum_info.Statevector. OpenQASM 2: exactly the state of Qiskit's own reading of the
same file (QuantumCircuit.from_qasm_str). OpenQASM 3: Qiskit's exporter writes the definitions of
gates outside stdgates.inc without their global phase, so the file's state equals the original
circuit's up to a global phase (and exactly where only stdgates.inc gates are used). Skipped only
where qiskit (or, for OpenQASM 3, openqasm3) is not installed: both are in the test extra."""
import numpy as np
import pytest

from hpr.quantum import qasm

pytest.importorskip("qiskit")
from qiskit import QuantumCircuit, qasm2, qasm3  # noqa: E402
from qiskit.circuit.random import random_circuit  # noqa: E402
from qiskit.quantum_info import Statevector  # noqa: E402


@pytest.mark.parametrize("seed", range(30))
def test_qasm2_random_circuits_equal_qiskit(seed):
    qc = random_circuit(5, 8, max_operands=4, seed=seed)
    text = qasm2.dumps(qc)
    want = Statevector(QuantumCircuit.from_qasm_str(text)).data
    got = qasm.run(qasm.loads(text)).amplitudes[0]
    np.testing.assert_allclose(got, want, atol=1e-12, rtol=0, err_msg=text)


@pytest.mark.parametrize("seed", range(20))
def test_qasm3_random_circuits_equal_qiskit(seed):
    pytest.importorskip("openqasm3")
    qc = random_circuit(5, 8, max_operands=4, seed=100 + seed)
    text = qasm3.dumps(qc)
    prog = qasm.loads(text)
    assert prog.version.startswith("3")
    got = qasm.run(prog).amplitudes[0]
    want = Statevector(qc).data
    phase = np.vdot(got, want)
    assert abs(abs(phase) - 1) < 1e-12, text
    np.testing.assert_allclose(got * phase / abs(phase), want, atol=1e-12, rtol=0, err_msg=text)


STD = ["h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx", "rx", "ry", "rz", "p", "cx", "cy", "cz", "cp", "crx",
       "cry", "crz", "ch", "swap", "ccx", "cswap", "cu", "id", "u"]


@pytest.mark.parametrize("seed", range(5))
def test_qasm3_stdgates_exactly(seed):
    """Gates of stdgates.inc (and U) carry Qiskit's matrices, global phase included."""
    pytest.importorskip("openqasm3")
    rng = np.random.default_rng(seed)
    qc = QuantumCircuit(4)
    for _ in range(40):
        name = STD[int(rng.integers(len(STD)))]
        nq = {"cswap": 3, "ccx": 3}.get(name, 2 if name.startswith("c") or name == "swap" else 1)
        np_ = {"rx": 1, "ry": 1, "rz": 1, "p": 1, "cp": 1, "crx": 1, "cry": 1, "crz": 1, "cu": 4, "u": 3}.get(name, 0)
        getattr(qc, name)(*rng.uniform(-3, 3, np_), *[int(q) for q in rng.permutation(4)[:nq]])
    text = qasm3.dumps(qc)
    np.testing.assert_allclose(qasm.run(qasm.loads(text)).amplitudes[0], Statevector(qc).data, atol=1e-12, rtol=0)


def test_qasm3_measure_reset_if_else():
    """OpenQASM 3's forms of measure, reset and if/else read into the same instructions."""
    pytest.importorskip("openqasm3")
    text = """OPENQASM 3.0;
include "stdgates.inc";
qubit[3] q;
bit[2] c;
bit d;
h q[0];
c[0] = measure q[0];
if (c[0]) { x q[1]; } else { h q[2]; }
if (c == 1) x q[2];
reset q[0];
measure q[1] -> c[1];
d = measure q[2];
gphase(0.25);
"""
    prog = qasm.loads(text)
    names = [op[0] for op in prog.ops]
    assert names == ["h", "measure", "if", "if", "reset", "measure", "measure", "gphase"]
    br = prog.ops[2][2][0]
    assert br.clbits == (0,) and br.value == 1 and br.body[0][0] == "x" and br.orelse[0][0] == "h"
    assert prog.ops[6][2] == (2,) and prog.cregs == {"c": 2, "d": 1}
    from hpr.quantum.simulate import run_shots
    from quantum_reference import chi_square_p, exact_distribution

    counts = run_shots(prog, 2000, seed=3)
    assert chi_square_p(counts, exact_distribution(prog)) > 1e-3
    assert set(counts) <= {"1 11", "0 00", "1 00", "0 10", "1 10"}
