"""OpenQASM 2.0 input (hpr.quantum.qasm) and its command line (python -m hpr.quantum run): the example
circuits in tests/data against dense references built here from Kronecker products of matrices written
out in full, errors that name the file and line, and an --out file that is either complete or absent."""
import os
import subprocess
import sys

import numpy as np
import pytest

from hpr.errors import ConfigError
from hpr.quantum import qasm

from launch import find_mpiexec, mpi_job

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

# ---- dense reference: qubit 0 is the LOW bit, so the operator is kron(M_{n-1}, ..., M_1, M_0)
I2 = np.eye(2, dtype=complex)
X = np.array([[0, 1], [1, 0]], complex)
Y = np.array([[0, -1j], [1j, 0]], complex)
Z = np.array([[1, 0], [0, -1]], complex)
H = np.array([[1, 1], [1, -1]], complex) / np.sqrt(2)
S = np.array([[1, 0], [0, 1j]], complex)
TDG = np.array([[1, 0], [0, np.exp(-1j * np.pi / 4)]], complex)
SX = np.array([[1 + 1j, 1 - 1j], [1 - 1j, 1 + 1j]], complex) / 2
P0 = np.array([[1, 0], [0, 0]], complex)
P1 = np.array([[0, 0], [0, 1]], complex)


def RX(t):
    return np.array([[np.cos(t / 2), -1j * np.sin(t / 2)], [-1j * np.sin(t / 2), np.cos(t / 2)]])


def RY(t):
    return np.array([[np.cos(t / 2), -np.sin(t / 2)], [np.sin(t / 2), np.cos(t / 2)]], complex)


def RZ(t):
    return np.array([[np.exp(-0.5j * t), 0], [0, np.exp(0.5j * t)]])


def U1(lam):
    return np.array([[1, 0], [0, np.exp(1j * lam)]])


def U3(t, p, lam):
    c, s = np.cos(t / 2), np.sin(t / 2)
    return np.array([[c, -np.exp(1j * lam) * s], [np.exp(1j * p) * s, np.exp(1j * (p + lam)) * c]])


def op(n, factors):
    """kron over qubits n-1 .. 0 of factors.get(q, I)."""
    m = np.eye(1, dtype=complex)
    for q in range(n - 1, -1, -1):
        m = np.kron(m, factors.get(q, I2))
    return m


def one(n, q, U):
    return op(n, {q: U})


def controlled(n, c, t, U):
    return op(n, {c: P0}) + op(n, {c: P1, t: U})


def ccx(n, a, b, t):
    return np.eye(1 << n) - op(n, {a: P1, b: P1}) + op(n, {a: P1, b: P1, t: X})


def swap(n, a, b):
    return 0.5 * (np.eye(1 << n) + op(n, {a: X, b: X}) + op(n, {a: Y, b: Y}) + op(n, {a: Z, b: Z}))


def rzz(n, a, b, t):
    return np.cos(t / 2) * np.eye(1 << n) - 1j * np.sin(t / 2) * op(n, {a: Z, b: Z})


def evolve(n, ops):
    psi = np.zeros(1 << n, complex)
    psi[0] = 1
    for m in ops:
        psi = m @ psi
    return psi


def ref_bell():
    return evolve(2, [one(2, 0, H), controlled(2, 0, 1, X)])


def ref_ghz():
    n = 4
    return evolve(n, [one(n, 0, H), controlled(n, 0, 1, X), controlled(n, 1, 2, X), controlled(n, 2, 3, X)])


def ref_qft3():
    n = 3
    return evolve(n, [one(n, 0, X), one(n, 2, X), one(n, 2, H), controlled(n, 1, 2, U1(np.pi / 2)),
                      controlled(n, 0, 2, U1(np.pi / 4)), one(n, 1, H), controlled(n, 0, 1, U1(np.pi / 2)),
                      one(n, 0, H), swap(n, 0, 2)])


def ref_rotations():
    n = 3
    ms = [one(n, 0, RX(0.3)), one(n, 1, RY(-1.1)), one(n, 2, RZ(np.pi / 3)),
          one(n, 0, U3(0.5, 0.25 * np.pi, -0.75)), one(n, 2, U3(np.pi / 2, np.pi / 8, 0.5)),
          one(n, 1, U1(0.15)), one(n, 2, U3(0.1, 0.2, 0.3)),
          one(n, 0, H), one(n, 1, H), one(n, 2, H),
          controlled(n, 1, 2, RZ(0.7)), controlled(n, 2, 0, RY(0.5)), rzz(n, 0, 2, -0.5),
          one(n, 1, S), one(n, 0, TDG), one(n, 2, SX), controlled(n, 0, 1, H),
          controlled(n, 1, 0, U3(0.3, 0.2, 0.1)), ccx(n, 0, 2, 1), controlled(n, 2, 0, X)]
    return evolve(n, ms)


def test_reference_conventions():
    """The reference itself: X on qubit 0 of 2 flips the low bit; cx(0, 1) on |01> gives |11>."""
    assert np.argmax(np.abs(evolve(2, [one(2, 0, X)]))) == 1
    assert np.argmax(np.abs(evolve(2, [one(2, 0, X), controlled(2, 0, 1, X)]))) == 3


@pytest.mark.parametrize("name,ref", [("bell", ref_bell), ("ghz", ref_ghz), ("qft3", ref_qft3),
                                      ("rotations", ref_rotations)])
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_files_match_dense_reference(name, ref, dtype):
    prog = qasm.load(os.path.join(DATA, name + ".qasm"))
    psi = ref()
    assert prog.n_qubits == int(np.log2(psi.size))
    sv = qasm.run(prog, dtype=dtype)
    assert sv.amplitudes.dtype == dtype
    tol = 1e-12 if dtype == np.complex128 else 2e-6
    np.testing.assert_allclose(sv.amplitudes[0], psi, atol=tol, rtol=0)


def test_qft3_is_the_fourier_transform():
    sv = qasm.run(qasm.load(os.path.join(DATA, "qft3.qasm")))
    k = np.arange(8)
    np.testing.assert_allclose(sv.amplitudes[0], np.exp(2j * np.pi * 5 * k / 8) / np.sqrt(8), atol=1e-12)


def test_program_contents():
    prog = qasm.load(os.path.join(DATA, "ghz.qasm"))
    gates = [("h", (0,), ()), ("cx", (0, 1), ()), ("cx", (1, 2), ()), ("cx", (2, 3), ())]
    assert prog.ops == gates + [("measure", (q,), (q,)) for q in range(4)]  # measure q -> c: bit q
    assert prog.n_gates == 4 and prog.terminal_measurements and not prog.is_unitary
    assert prog.qregs == {"a": (0, 2), "b": (2, 2)}
    assert prog.measurements == [(0, "c", 0), (1, "c", 1), (2, "c", 2), (3, "c", 3)]
    assert list(prog.lines[:4]) == [7, 8, 9, 10]
    rot = qasm.load(os.path.join(DATA, "rotations.qasm"))
    assert rot.ops[2] == ("rz", (2,), (pytest.approx(np.pi / 3),))
    assert rot.ops[4][2] == (pytest.approx(np.pi / 8), 0.5)
    assert rot.ops[6][0] == "u3"  # U
    assert [o[1] for o in rot.ops[7:10]] == [(0,), (1,), (2,)]  # h q: broadcast over the register


def test_text_and_broadcast():
    prog = qasm.load('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg a[2];\nqreg b[2];\ncx a, b;\n')
    assert prog.ops == [("cx", (0, 2), ()), ("cx", (1, 3), ())]
    prog = qasm.load("qreg a[2]; qreg b[1]; cx a, b[0];")
    assert prog.ops == [("cx", (0, 2), ()), ("cx", (1, 2), ())]


def test_pasted_qelib1_definitions_keep_builtins():
    text = """OPENQASM 2.0;
gate u3(theta,phi,lambda) q { U(theta,phi,lambda) q; }
gate h a { u2(0,pi) a; }
gate majority a,b,c { cx c,b; cx c,a; ccx a,b,c; }
qreg q[3];
h q[0];
majority q[0], q[1], q[2];
"""
    prog = qasm.load(text)
    assert prog.ops == [("h", (0,), ()), ("cx", (2, 1), ()), ("cx", (2, 0), ()), ("ccx", (0, 1, 2), ())]
    assert list(prog.lines) == [6, 7, 7, 7]


BAD = [
    ("unknown gate", 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nh q[0];\nfoo q[1];\n', 5, "unsupported gate 'foo'"),
    ("out of range", 'OPENQASM 2.0;\nqreg q[2];\n\nh q[0];\n// comment\ncx q[0],\n   q[2];\n', 7, "out of range"),
    ("syntax: missing ;", 'OPENQASM 2.0;\nqreg q[2];\nh q[0]\ncx q[0], q[1];\n', 4, "syntax error"),
    ("syntax: bad char", 'OPENQASM 2.0;\nqreg q[2];\nh q[0];\nrx(0.1 $ 2) q[0];\n', 4, "syntax error"),
    ("syntax: unclosed paren", 'qreg q[1];\nrx((0.1) q[0];\n', 2, "syntax error"),
    ("unsupported opaque", 'qreg q[1];\nh q[0];\n\nopaque g a;\n', 4, "unsupported statement 'opaque'"),
    ("unsupported include", 'OPENQASM 2.0;\ninclude "mylib.inc";\n', 2, "only \"qelib1.inc\""),
    ("undeclared register", 'qreg q[1];\nh r[0];\n', 2, "not a declared qreg"),
    ("wrong arity", 'qreg q[2];\ncx q[0];\n', 2, "acts on 2 qubit(s)"),
    ("wrong parameter count", 'qreg q[1];\nrx q[0];\n', 2, "takes 1 parameter"),
    ("repeated qubit", 'qreg q[2];\n\ncx q[1], q[1];\n', 3, "appears twice"),
    ("bad gate body", 'qreg q[1];\ngate g a {\n  h a;\n  nope a;\n}\n', 4, "unsupported gate 'nope'"),
    ("no qubits", 'OPENQASM 2.0;\ncreg c[1];\n', 3, "no qreg"),
    ("version 4", 'OPENQASM 4.0;\nqubit[2] q;\n', 1, "OPENQASM 4.0"),
]


@pytest.mark.parametrize("what,text,line,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_files_name_file_and_line(tmp_path, what, text, line, msg):
    path = tmp_path / "bad.qasm"
    path.write_text(text)
    with pytest.raises(qasm.QasmError) as e:
        qasm.load(str(path))
    assert isinstance(e.value, ConfigError)
    assert e.value.line == line, str(e.value)
    assert e.value.file == str(path)
    assert str(e.value).startswith(f"{path}:{line}: "), str(e.value)
    assert msg in str(e.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.qasm"
    with pytest.raises(qasm.QasmError) as e:
        qasm.load(str(path))
    assert e.value.line is None and str(path) in str(e.value) and "not found" in str(e.value)


# ---- the command line
def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "hpr.quantum", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))


def test_cli_writes_loadable_npy(tmp_path):
    out = tmp_path / "state.npy"
    r = _cli("run", os.path.join(DATA, "qft3.qasm"), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3 qubits, 17 gates" in r.stdout
    assert sorted(os.listdir(tmp_path)) == ["state.npy"]  # no temporary left behind
    a = np.load(out)
    assert a.shape == (8,) and a.dtype == np.complex128
    np.testing.assert_allclose(a, ref_qft3(), atol=1e-12)
    r = _cli("run", os.path.join(DATA, "bell.qasm"), "--out", str(out), "--dtype", "complex64", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a = np.load(out)
    assert a.dtype == np.complex64
    np.testing.assert_allclose(a, ref_bell(), atol=1e-6)
    lines = r.stdout.splitlines()
    i = next(k for k, s in enumerate(lines) if "basis state" in s)
    assert lines[i + 1].split()[:2] == ["00", "0"] and lines[i + 2].split()[:2] == ["11", "3"]


def test_cli_error_leaves_no_file(tmp_path):
    bad = tmp_path / "bad.qasm"
    bad.write_text("qreg q[1];\nh q[0];\nbogus q[0];\n")
    out = tmp_path / "state.npy"
    r = _cli("run", str(bad), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2
    assert f"{bad}:3:" in r.stderr and "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.qasm"]
    r = _cli("run", str(tmp_path / "missing.qasm"), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.qasm"]


def test_save_is_atomic(tmp_path, monkeypatch):
    """A write that dies halfway leaves the previous file intact and no temporary behind."""
    from hpr.quantum import __main__ as cli

    out = tmp_path / "state.npy"
    cli.save_atomic(str(out), np.arange(4, dtype=complex))

    def dying_save(f, a):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.np, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        cli.save_atomic(str(out), np.zeros(1 << 10, complex))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["state.npy"]
    np.testing.assert_array_equal(np.load(out), np.arange(4, dtype=complex))


@pytest.mark.skipif(find_mpiexec() is None, reason="no mpiexec")
def test_cli_under_mpiexec(tmp_path, env):
    out = tmp_path / "state.npy"
    r = mpi_job(2, ["-m", "hpr.quantum", "run", os.path.join(DATA, "ghz.qasm"), "--out", out], tmp_path, env, 120)
    assert r.code == 0, r.out + r.err
    assert r.out.count("4 qubits, 4 gates") == 1  # rank 0 prints
    assert "DistributedStateVector" in r.out  # used, or its absence stated
    np.testing.assert_allclose(np.load(out), ref_ghz(), atol=1e-12)


# ---- the reader's limits: budget, nesting, numbers, large files
def nested(levels):
    """A file whose gate g_k applies g_(k-1) twice: g_levels expands to 2**levels gates."""
    lines = ['OPENQASM 2.0;', 'include "qelib1.inc";', "gate g0 a { x a; }"]
    lines += [f"gate g{k} a {{ g{k - 1} a; g{k - 1} a; }}" for k in range(1, levels + 1)]
    return "\n".join(lines + ["qreg q[1];", f"g{levels} q[0];", ""])


def test_budget_refuses_before_expanding():
    prog = qasm.loads(nested(10))
    assert len(prog.ops) == 1024 and prog.ops[0] == ("x", (0,), ())
    with pytest.raises(qasm.QasmError) as e:
        qasm.loads(nested(10), max_ops=1000)
    assert e.value.line == 15 and "1,024" in str(e.value) and "--max-ops" in str(e.value)
    with pytest.raises(qasm.QasmError) as e:  # 2**65 gates: refused at once, nothing expanded
        qasm.loads(nested(65))
    assert e.value.line == 70 and "36,893,488,147,419,103,232" in str(e.value)
    with pytest.raises(qasm.QasmError, match="more than 3 operations"):
        qasm.loads("qreg q[2]; creg c[2]; h q; measure q -> c;", max_ops=3)


def test_cli_max_ops(tmp_path):
    f = tmp_path / "deep.qasm"
    f.write_text(nested(65))
    r = _cli("run", str(f), cwd=tmp_path)
    assert r.returncode == 2 and f"{f}:70:" in r.stderr and "Traceback" not in r.stderr
    f.write_text(nested(5))
    assert _cli("run", str(f), "--max-ops", "31", cwd=tmp_path).returncode == 2
    r = _cli("run", str(f), "--max-ops", "32", cwd=tmp_path)
    assert r.returncode == 0 and "32 gates" in r.stdout


NUMERIC = [
    ("rz(10^400) q[0];", "overflows"), ("rz((-1)^0.5) q[0];", "fractional power"),
    ("rz(1/0) q[0];", "division by zero"), ("rz(1e400) q[0];", "overflows"), ("rz(exp(1000)) q[0];", "exp"),
    ("rz(sqrt(-1)) q[0];", "sqrt"), ("rz(ln(0)) q[0];", "ln"), ("rz(0^-1) q[0];", "zero to a negative power"),
    ("rz(1e300*1e300) q[0];", "not a finite"), ("g(0) q[0];", "division by zero"),
]


@pytest.mark.parametrize("stmt,msg", NUMERIC, ids=[n[0] for n in NUMERIC])
@pytest.mark.parametrize("fast", [True, False], ids=["one-line", "split"])
def test_numeric_errors_name_the_line(tmp_path, stmt, msg, fast):
    """Both the one-line fast path and the token parser (a statement split over lines) report them."""
    if not fast:
        stmt = stmt.replace(" q[0]", "\n  q[0]")
    path = tmp_path / "num.qasm"
    path.write_text('OPENQASM 2.0;\ninclude "qelib1.inc";\ngate g(t) a { rz(1/t) a; }\nqreg q[1];\n' + stmt + "\n")
    with pytest.raises(qasm.QasmError) as e:
        qasm.load(str(path))
    assert e.value.file == str(path) and e.value.line == 5, str(e.value)
    assert msg in str(e.value)


def test_fast_and_token_paths_agree():
    """The same statements, one per line (the fast path) and split or packed (the token parser)."""
    body = ["u3(pi/2, -0.25*pi, 2^-1) q[0];", "cu(0.1, 0.2, sin(0.3), -(0.4)) q[0], r[1];", "cx q, r;",
            "measure q[1] -> c[0];", "rccx q[0], q[1], r[0];", "reset r;", "h q;", "measure r -> d;"]
    head = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2]; qreg r[2]; creg c[1]; creg d[2];\n'
    a = qasm.loads(head + "\n".join(body) + "\n")
    b = qasm.loads(head + " ".join(body) + "\n")
    c = qasm.loads(head + "\n".join(s.replace(" ", "\n ", 1) for s in body) + "\n")
    assert a.ops == b.ops == c.ops and len(a.ops) == 12
    assert a.ops[0] == ("u3", (0,), (pytest.approx(np.pi / 2), pytest.approx(-0.25 * np.pi), 0.5))


def test_large_file_streams(tmp_path):
    """A file of 60k gates is read line by line (never whole) and equals the same text read at once."""
    rng = np.random.default_rng(0)
    lines = ['OPENQASM 2.0;', 'include "qelib1.inc";', "qreg q[6];"]
    for i in range(60000):
        a, b = (int(x) for x in rng.permutation(6)[:2])
        lines.append(f"rz({rng.uniform(-3, 3):.6f}) q[{a}];" if i % 3 else f"cx q[{a}],q[{b}];")
    text = "\n".join(lines) + "\n"
    path = tmp_path / "big.qasm"
    path.write_text(text)
    import builtins

    real_open = builtins.open
    reads = []

    class Spy:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            reads.append(n)
            return self.f.read(n)

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __iter__(self):
            return iter(self.f)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return self.f.__exit__(*a)

    builtins.open = lambda *a, **k: Spy(real_open(*a, **k))
    try:
        prog = qasm.load(str(path))
    finally:
        builtins.open = real_open
    assert all(n is not None and 0 < n <= 4096 for n in reads), reads  # only the header was read by size
    assert prog.n_gates == 60000 and prog.ops == qasm.loads(text).ops
    np.testing.assert_allclose(qasm.run(prog).amplitudes[0], qasm.run(qasm.loads(text), state=None).amplitudes[0])


def test_qasm3_errors_name_the_line(tmp_path):
    pytest.importorskip("openqasm3")
    for text, line, msg in [("OPENQASM 3.0;\nqubit[2] q;\nh q[0]\nx q[1];\n", 4, "syntax error"),
                            ("OPENQASM 3.0;\nqubit[2] q;\nfor int i in [0:1] { h q[i]; }\n", 3, "unsupported statement"),
                            ("OPENQASM 3.0;\ninclude \"stdgates.inc\";\nqubit[1] q;\nrz(2 ** 2000) q[0];\n", 4,
                             "overflows"),
                            ("OPENQASM 3.0;\nqubit[1] q;\nctrl @ x q[0];\n", 3, "modifiers")]:
        path = tmp_path / "e.qasm"
        path.write_text(text)
        with pytest.raises(qasm.QasmError) as e:
            qasm.load(str(path))
        assert e.value.line == line and msg in str(e.value), str(e.value)
