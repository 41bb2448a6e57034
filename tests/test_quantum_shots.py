"""Shots (hpr.quantum.simulate.run_shots, python -m hpr.quantum run --shots): measure, reset and if as a
batch of trajectories, terminal measurements sampled once, counts keyed as Qiskit keys them. Each
distribution against the exact one (every branch enumerated by a dense numpy simulator written in
tests/quantum_reference.py) with a chi-square test at p > 0.001 (fixed seeds), and against Qiskit Aer's
counts for the same file where Aer is installed."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hpr.quantum import qasm
from hpr.quantum.simulate import run_shots
from quantum_reference import chi_square_p, exact_distribution

HEAD = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
CIRCUITS = {
    "teleport-like": HEAD + """qreg q[3]; creg a[1]; creg b[1]; creg out[1];
u3(1.1, 0.3, -0.4) q[0]; h q[1]; cx q[1], q[2]; cx q[0], q[1]; h q[0];
measure q[0] -> a[0]; measure q[1] -> b[0];
if (b == 1) x q[2]; if (a == 1) z q[2];
u3(-1.1, 0.4, -0.3) q[2]; measure q[2] -> out[0];
""",
    "reset-and-reuse": HEAD + """qreg q[2]; creg c[4];
h q[0]; cx q[0], q[1]; measure q[0] -> c[0]; reset q[0]; ry(0.7) q[0]; measure q[0] -> c[1];
reset q[1]; sxdg q[1]; cu(0.3, 0.2, 0.1, 0.5) q[1], q[0]; measure q[1] -> c[2]; measure q[0] -> c[3];
""",
    "gates-after-measure": HEAD + """qreg q[3]; creg c[3];
h q; measure q[0] -> c[0]; cx q[0], q[1]; rccx q[0], q[1], q[2]; measure q[1] -> c[1];
if (c == 3) rx(0.9) q[2]; measure q[2] -> c[2];
""",
    "terminal": HEAD + """qreg q[4]; creg c[2]; creg d[2];
h q[0]; cx q[0], q[1]; ry(0.8) q[2]; crx(1.3) q[2], q[3]; c3sqrtx q[0], q[1], q[2], q[3];
measure q[0] -> c[1]; measure q[1] -> d[0]; measure q[2] -> c[0]; measure q[3] -> d[1];
""",
}


def random_program_text(n, count, seed):
    """An OpenQASM 2 circuit of random gates, measurements, resets and ifs."""
    rng = np.random.default_rng(seed)
    lines = [HEAD + f"qreg q[{n}];\ncreg c[{n}];"]
    gates = [("h", 1, 0), ("rx", 1, 1), ("u3", 1, 3), ("cx", 2, 0), ("cry", 2, 1), ("ccx", 3, 0), ("rzz", 2, 1)]
    for _ in range(count):
        r = rng.random()
        q = [int(x) for x in rng.permutation(n)]
        if r < 0.15:
            lines.append(f"measure q[{q[0]}] -> c[{int(rng.integers(n))}];")
        elif r < 0.22:
            lines.append(f"reset q[{q[0]}];")
        else:
            name, k, p = gates[int(rng.integers(len(gates)))]
            ps = "(" + ",".join(f"{v:.3f}" for v in rng.uniform(-3, 3, p)) + ")" if p else ""
            op = f"{name}{ps} " + ",".join(f"q[{x}]" for x in q[:k]) + ";"
            lines.append(f"if (c == {int(rng.integers(1 << n))}) {op}" if r > 0.85 else op)
    lines += [f"measure q[{i}] -> c[{i}];" for i in range(n)]
    return "\n".join(lines) + "\n"


def check_against_exact(prog, shots, seed, **kw):
    counts = run_shots(prog, shots, seed=seed, **kw)
    assert sum(counts.values()) == shots
    exact = exact_distribution(prog)
    p = chi_square_p(counts, exact)
    assert p > 1e-3, f"chi-square p = {p:.2e}: counts {counts} against exact {exact}"
    return counts


@pytest.mark.parametrize("name", sorted(CIRCUITS))
def test_shots_match_the_exact_distribution(name):
    prog = qasm.loads(CIRCUITS[name])
    counts = check_against_exact(prog, 4000, seed=11)
    assert all(len(k.replace(" ", "")) == prog.n_clbits for k in counts)
    assert prog.terminal_measurements == (name == "terminal")


@pytest.mark.parametrize("seed", range(6))
def test_random_measured_circuits(seed):
    check_against_exact(qasm.loads(random_program_text(4, 30, seed)), 3000, seed=seed)


def test_key_order_is_qiskits():
    """Bit 0 rightmost within a register; the register declared last first."""
    prog = qasm.loads(HEAD + "qreg q[3]; creg a[2]; creg b[1]; x q[0]; x q[2]; "
                      "measure q[0] -> a[1]; measure q[1] -> a[0]; measure q[2] -> b[0];")
    assert run_shots(prog, 10, seed=0) == {"1 10": 10}
    prog = qasm.loads(HEAD + "qreg q[3]; creg a[2]; creg b[1]; x q[0]; reset q[1]; x q[2]; "
                      "measure q[0] -> a[1]; measure q[1] -> a[0]; measure q[2] -> b[0];")
    assert run_shots(prog, 10, seed=0) == {"1 10": 10}  # the same outcome through trajectories


def test_batches_and_seeds():
    """Trajectories in batches of 3 states give the same kind of distribution; a seed repeats a run."""
    prog = qasm.loads(CIRCUITS["gates-after-measure"])
    small = check_against_exact(prog, 2000, seed=5, max_batch_bytes=3 * 16 * 8)
    assert small == run_shots(prog, 2000, seed=5, max_batch_bytes=3 * 16 * 8)
    assert small != run_shots(prog, 2000, seed=6, max_batch_bytes=3 * 16 * 8)
    check_against_exact(prog, 2000, seed=5, dtype=np.complex64)


def test_terminal_sampling_equals_trajectories():
    """The one-draw sampling of a terminal circuit and the trajectory path (the same circuit with a
    reset of a fresh ancilla, which forces trajectories) give one distribution."""
    text = CIRCUITS["terminal"]
    forced = text.replace("qreg q[4];", "qreg q[4]; qreg anc[1]; reset anc[0];")
    a, b = qasm.loads(text), qasm.loads(forced)
    assert a.terminal_measurements and not b.terminal_measurements
    ca, cb = run_shots(a, 4000, seed=1), run_shots(b, 4000, seed=2)
    exact = exact_distribution(a)
    assert chi_square_p(ca, exact) > 1e-3 and chi_square_p(cb, exact) > 1e-3


def test_a_test_that_can_fail():
    """The chi-square check rejects a wrong distribution: counts of a fair coin against a biased one."""
    prog = qasm.loads(HEAD + "qreg q[1]; creg c[1]; h q[0]; measure q[0] -> c[0];")
    counts = run_shots(prog, 4000, seed=3)
    assert chi_square_p(counts, {"0": 0.5, "1": 0.5}) > 1e-3
    assert chi_square_p(counts, {"0": 0.45, "1": 0.55}) < 1e-3


@pytest.mark.parametrize("seed", range(8))
def test_qiskit_random_circuits_with_measure_reset_if(seed):
    """qiskit.circuit.random.random_circuit with measure, reset and conditionals, exported by
    qiskit.qasm2.dumps: hpr's counts against the exact distribution and Aer's counts."""
    pytest.importorskip("qiskit")
    from qiskit import qasm2
    from qiskit.circuit.random import random_circuit

    qc = random_circuit(4, 6, max_operands=3, measure=True, conditional=True, reset=True, seed=seed)
    text = qasm2.dumps(qc)
    prog = qasm.loads(text)
    counts = check_against_exact(prog, 3000, seed=seed)
    try:
        from qiskit import QuantumCircuit, transpile
        from qiskit_aer import AerSimulator
    except ImportError:
        return
    sim = AerSimulator()
    aer = sim.run(transpile(QuantumCircuit.from_qasm_str(text), sim), shots=3000, seed_simulator=seed).result()
    aer = aer.get_counts()
    assert set(aer) <= set(exact_distribution(prog)) and set(counts) <= set(exact_distribution(prog))
    assert chi_square_p(aer, exact_distribution(prog)) > 1e-3  # Aer agrees with the same reference


def test_run_refuses_a_distribution():
    prog = qasm.loads(CIRCUITS["reset-and-reuse"])
    with pytest.raises(qasm.QasmError, match="run it with shots"):
        qasm.run(prog)


def test_cli_shots_json(tmp_path):
    src = tmp_path / "t.qasm"
    src.write_text(CIRCUITS["teleport-like"])
    out = tmp_path / "counts.json"
    r = subprocess.run([sys.executable, "-m", "hpr.quantum", "run", str(src), "--shots", "3000", "--seed", "4",
                        "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert r.returncode == 0, r.stderr
    assert "3000 shots, seed 4" in r.stdout and "trajectories" in r.stdout
    got = json.loads(out.read_text())
    assert got["shots"] == 3000 and got["seed"] == 4 and sum(got["counts"].values()) == 3000
    assert got["counts"] == run_shots(qasm.loads(CIRCUITS["teleport-like"]), 3000, seed=4)
    assert chi_square_p(got["counts"], exact_distribution(qasm.loads(CIRCUITS["teleport-like"]))) > 1e-3
    r = subprocess.run([sys.executable, "-m", "hpr.quantum", "run", str(src), "--shots", "0"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "positive whole number" in r.stderr
