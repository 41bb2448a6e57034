"""OpenQASM circuits for hpr's state vectors: the way in (load / loads pick the reader from the file's
``OPENQASM`` header: 2.x or none -> hpr.quantum.qasm2, hpr's own streaming reader; 3.x ->
hpr.quantum.qasm3 over the openqasm3 package's parser) and the ways to run what was read (run: the state
of a circuit's gates; run_shots: counts of measured circuits, hpr.quantum.simulate). Owns the choice of
reader and file handling (every error names the file, and the line where there is one); not the
syntax, the gates' maths (hpr.quantum.gates) nor the state (hpr.quantum.statevec).

Every reader expands user gates under a budget of max_ops operations (default 10**8; see
hpr.quantum.program), so a small file cannot unfold into more work than asked for.

Usage: ``prog = load("bell.qasm"); sv = run(prog); sv.amplitudes[0]; run_shots(prog, 1000, seed=1)``"""
import io
import os
import re

import numpy as np

from ..errors import ConfigError
from . import qasm2
from .program import MAX_OPS, Branch, Program, QasmError
from .simulate import check_one_state, run_shots, run_state

__all__ = ["QasmError", "Program", "Branch", "load", "loads", "run", "run_shots", "MAX_OPS"]

_HEADER = re.compile(r"\s*OPENQASM\s+(\d+)(?:\.\d+)?\s*;")


def _version(head, file):
    """The major version of the first statement of head (a file's start), 2 when there is none; a
    version hpr does not read is a QasmError."""
    text = re.sub(r"//[^\n]*|/\*.*?\*/", lambda c: " " + "\n" * c.group().count("\n"), head, flags=re.S)
    m = _HEADER.match(text)
    if m is None:
        return 2
    v = int(m.group(1))
    if v not in (2, 3):
        full = re.match(r"\s*OPENQASM\s+([^;\s]*)", text).group(1)
        raise QasmError(f"OPENQASM {full}: hpr reads OpenQASM 2.0 and 3.x", file, text[:m.start(1)].count("\n") + 1)
    return v


def _is_text(x):
    return isinstance(x, str) and ("\n" in x or ";" in x)


def loads(text, file="<string>", max_ops=MAX_OPS):
    """A Program from QASM source text."""
    if _version(text[:4096], file) == 3:
        from . import qasm3  # lazy: needs the optional openqasm3 package

        return qasm3.read(text, file, max_ops)
    return qasm2.read(io.StringIO(text), file, max_ops)


def load(path_or_text, max_ops=MAX_OPS):
    """A Program from a .qasm file (a path) or from QASM source text (a string with a ';' or a newline).
    OpenQASM 2 files are read a line at a time; OpenQASM 3 ones whole (the parser needs the text)."""
    if _is_text(path_or_text):
        return loads(path_or_text, max_ops=max_ops)
    path = os.fspath(path_or_text)
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
            if _version(head, path) == 3:
                from . import qasm3  # lazy: needs the optional openqasm3 package

                return qasm3.read(head + f.read(), path, max_ops)
            f.seek(0)
            return qasm2.read(f, path, max_ops)
    except FileNotFoundError:
        raise QasmError("file not found; check the path (or pass the QASM source text itself)", path) from None
    except IsADirectoryError:
        raise QasmError("is a folder, not a .qasm file; pass the circuit's file", path) from None
    except UnicodeDecodeError as e:
        raise QasmError(f"is not UTF-8 text ({e}); pass an OpenQASM 2.0 text file (or an OpenQASM 3 one)", path) from None
    except OSError as e:
        raise QasmError(f"cannot read: {e.strerror or e}; check the file's permissions", path) from None


def run(program, dtype=np.complex128, state=None):
    """Simulate a Program (or a path / text, loaded first) from |0...0>: on one StateVector (batch 1),
    all gates in one compiled kernel call, or on ``state`` (anything with .apply(name, qubits, params),
    e.g. a DistributedStateVector) gate by gate. Measurements must all come at the end (the state
    returned is the one before them); a circuit that measures, resets or branches earlier has a
    distribution for its result: run_shots. Returns the state."""
    if not isinstance(program, Program):
        program = load(program)
    if state is None:
        return run_state(program, dtype)
    check_one_state(program)
    for (name, qs, ps), line in zip(program.ops, program.lines):
        if name == "measure":
            continue
        try:
            state.apply(name, list(qs), list(ps) if ps else None)
        except ConfigError as e:
            raise QasmError(str(e), program.source, line) from None
    return state
