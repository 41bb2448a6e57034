"""References for the quantum tests, written independently of hpr's kernels: a dense numpy simulator
that enumerates every measurement branch of a Program (the exact distribution of its classical
outcomes), and a chi-square goodness-of-fit p-value. Not a test module (imported by them)."""
import math

import numpy as np

from hpr.quantum import gates as G


def apply_dense(psi, m, qubits, n):
    """psi (2**n,) <- m (2**k x 2**k, qubits[0] its low bit) on `qubits`, by tensordot."""
    k = len(qubits)
    t = psi.reshape((2,) * n)  # axis a is qubit n-1-a
    axes = [n - 1 - q for q in reversed(qubits)]  # m's row bits k-1..0 are qubits[k-1]..qubits[0]
    out = np.tensordot(np.asarray(m, complex).reshape((2,) * (2 * k)), t, axes=(list(range(k, 2 * k)), axes))
    return np.moveaxis(out, list(range(k)), axes).reshape(-1)


def _p1(psi, q):
    idx = np.arange(psi.size)
    return float(np.sum(np.abs(psi[(idx >> q) & 1 == 1]) ** 2))


def _collapse(psi, q, bit):
    idx = np.arange(psi.size)
    out = np.where(((idx >> q) & 1) == bit, psi, 0)
    return out / np.linalg.norm(out)


def exact_distribution(program):
    """{Qiskit-style key: probability} of the program's classical bits, every branch enumerated."""
    n = program.n_qubits
    psi = np.zeros(1 << n, complex)
    psi[0] = 1
    dist = {}
    for bits, p in _branches(list(zip(program.ops, program.lines)), psi, np.zeros(program.n_clbits, int), 1.0, n):
        regs = sorted(program.cregs, key=program.clbit_offsets.get, reverse=True)
        key = " ".join("".join(str(bits[program.clbit_offsets[r] + i]) for i in range(program.cregs[r] - 1, -1, -1))
                       for r in regs)
        dist[key] = dist.get(key, 0.0) + p
    return dist


def _branches(ops, psi, bits, prob, n):
    """[(bits, probability)] of every outcome of the instructions ops from psi."""
    for i, ((name, qs, ps), line) in enumerate(ops):
        rest = ops[i + 1:]
        if name in ("measure", "reset"):
            p1 = _p1(psi, qs[0])
            out = []
            for bit, p in ((0, 1 - p1), (1, p1)):
                if p < 1e-14:
                    continue
                s, b = _collapse(psi, qs[0], bit), bits.copy()
                if name == "measure" and ps[0] >= 0:
                    b[ps[0]] = bit
                if name == "reset" and bit:
                    s = apply_dense(s, [[0, 1], [1, 0]], [0 + qs[0]], n)
                out += _branches(rest, s, b, prob * p, n)
            return out
        if name == "if":
            br = ps[0]
            v = sum(int(bits[c]) << k for k, c in enumerate(br.clbits))
            body = list(zip(br.body, br.lines)) if v == br.value else list(zip(br.orelse, br.orelse_lines))
            return _branches(body + rest, psi, bits, prob, n)
        psi = apply_dense(psi, G.matrix(name, ps), list(qs), n)
    return [(bits, prob)]


def chi_square_p(counts, probs):
    """The p-value of observing counts {key: n} when the outcomes have probabilities {key: p}: bins
    with an expected count below 5 are pooled (a pool still below 5 joins the least expected bin); an
    outcome of probability 0 that was seen gives 0."""
    shots = sum(counts.values())
    if any(probs.get(k, 0.0) < 1e-12 for k in counts):
        return 0.0
    obs, exp, pool_o, pool_e = [], [], 0, 0.0
    for k, p in probs.items():
        e = p * shots
        if e < 5:
            pool_o, pool_e = pool_o + counts.get(k, 0), pool_e + e
        else:
            obs.append(counts.get(k, 0))
            exp.append(e)
    if pool_e >= 5 or (pool_e > 0 and not exp):
        obs.append(pool_o)
        exp.append(pool_e)
    elif pool_e > 0:  # too small a pool to stand alone: joined to the least expected bin
        j = int(np.argmin(exp))
        obs[j] += pool_o
        exp[j] += pool_e
    dof = len(obs) - 1
    if dof < 1:
        return 1.0
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp))
    try:
        from scipy.stats import chi2  # lazy: optional, the approximation below serves without it

        return float(chi2.sf(stat, dof))
    except ImportError:  # Wilson-Hilferty: (stat/dof)^(1/3) is close to normal
        z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
        return 0.5 * math.erfc(z / math.sqrt(2))
