"""numpy twins of hpr's kernels: slow, obvious, and the executable spec the compiled and CUDA kernels
are tested against. Usage: ``np.testing.assert_array_equal(fast(...), _ref.reduce_many(...))``."""
import numpy as np

_NP_OPS = {"sum": np.add, "max": np.maximum, "min": np.minimum, "avg": np.add}


def _wide(dtype):
    """The dtype a reduction accumulates in: float32 for the half types, else the dtype itself."""
    return np.float32 if np.dtype(dtype).itemsize == 2 and np.dtype(dtype).kind != "i" else dtype


def reduce_many(ins, op="sum", scale=1.0):
    """(ins[0] op ins[1] op ...) * scale in list order, accumulated as the kernel does."""
    acc = np.asarray(ins[0]).astype(_wide(ins[0].dtype))
    f = _NP_OPS[op]
    for x in ins[1:]:
        acc = f(acc, np.asarray(x).astype(acc.dtype))
    if scale != 1.0:
        acc = acc * acc.dtype.type(scale)
    return acc.astype(ins[0].dtype)


def reduce_into(a, b, op="sum"):
    return reduce_many([a, b], op)


def half_to_float(bits, bfloat):
    """uint16 bit patterns of float16 (or bfloat16) widened to float32."""
    if bfloat:
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.view(np.float16).astype(np.float32)


def float_to_half(x, bfloat):
    """float32 rounded to float16 (or bfloat16) bit patterns, nearest-even."""
    if bfloat:
        import ml_dtypes  # lazy: an optional package (the test extra); only bfloat16 needs it

        return x.astype(ml_dtypes.bfloat16).view(np.uint16)
    with np.errstate(over="ignore"):  # overflow to inf is the rounding we want
        return x.astype(np.float16).view(np.uint16)


# ---- layer kernels (hpr.kernels.nn); shapes: N rows, C channels, V vocabulary, T time ----
_K = np.sqrt(2.0 / np.pi)


def layernorm_forward(x, w, b, eps=1e-5):
    """(out, mean, rstd) over the last axis."""
    mean = x.mean(-1)
    var = ((x - mean[..., None]) ** 2).mean(-1)
    rstd = 1.0 / np.sqrt(var + eps)
    out = (x - mean[..., None]) * rstd[..., None] * w + b
    return out.astype(x.dtype), mean.astype(x.dtype), rstd.astype(x.dtype)


def layernorm_backward(dout, x, w, mean, rstd):
    """(dx, dw, db) for one LayerNorm."""
    xhat = (x - mean[..., None]) * rstd[..., None]
    dn = dout * w
    dx = (dn - dn.mean(-1, keepdims=True) - xhat * (dn * xhat).mean(-1, keepdims=True)) * rstd[..., None]
    c = x.shape[-1]
    return dx, (dout * xhat).reshape(-1, c).sum(0), dout.reshape(-1, c).sum(0)


def softmax_causal_forward(pre, scale):
    t = pre.shape[-1]
    mask = np.tril(np.ones((t, t), bool))
    z = np.where(mask, pre * scale, -np.inf)
    z = z - z.max(-1, keepdims=True)
    e = np.where(mask, np.exp(z), 0)
    return (e / e.sum(-1, keepdims=True)).astype(pre.dtype)


def softmax_causal_backward(datt, att, scale):
    return (scale * att * (datt - (att * datt).sum(-1, keepdims=True))).astype(att.dtype)


def gelu_forward(x):
    return 0.5 * x * (1 + np.tanh(_K * (x + 0.044715 * x ** 3)))


def gelu_backward(dout, x):
    th = np.tanh(_K * (x + 0.044715 * x ** 3))
    return dout * (0.5 * (1 + th) + 0.5 * x * (1 - th ** 2) * _K * (1 + 3 * 0.044715 * x ** 2))


def crossentropy(logits, targets, dscale=1.0):
    """(losses, dlogits)."""
    m = logits.max(-1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(-1, keepdims=True)
    rows = np.arange(len(targets))
    losses = (np.log(s[:, 0]) + m[:, 0] - logits[rows, targets]).astype(logits.dtype)
    d = e / s
    d[rows, targets] -= 1
    return losses, (d * dscale).astype(logits.dtype)


def embedding_forward(tokens, wte, wpe):
    return wte[tokens] + wpe[: tokens.shape[1]]


def embedding_backward(dout, tokens, v):
    """(dwte, dwpe) for one batch."""
    c = dout.shape[-1]
    dwte = np.zeros((v, c), dout.dtype)
    np.add.at(dwte, tokens.reshape(-1), dout.reshape(-1, c))
    return dwte, dout.sum(0)


def bias_residual(a, bias, x=None):
    """x + (a + bias), or a + bias: numpy's own two additions, in that order (the bits the kernel keeps)."""
    y = a + bias
    return y if x is None else x + y


def adamw(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step, gscale=1.0):
    """(p, m, v) after one step, in float64 arithmetic."""
    g = g.astype(np.float64) * gscale
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    mhat = m / (1 - beta1 ** step)
    vhat = v / (1 - beta2 ** step)
    p = p * (1 - lr * weight_decay) - lr * mhat / (np.sqrt(vhat) + eps)
    return p, m, v


def _heads(qkv, b, t, h):
    """q, k, v views (B, H, T, D) of a (B*T, 3C) buffer with rows [q | k | v]."""
    c = qkv.shape[1] // 3
    s = qkv.reshape(b, t, 3, h, c // h).transpose(2, 0, 3, 1, 4)
    return s[0], s[1], s[2]


def attention_scores(qkv, b, t, h):
    """(B, H, T, T) scaled scores q k^T / sqrt(D), -inf above the diagonal (keys after the query)."""
    q, k, _ = _heads(qkv, b, t, h)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    return np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)


def attention_forward(qkv, b, t, h):
    """(y (B*T, C), lse (B, H, T), att (B, H, T, T)): y = causal softmax(q k^T / sqrt(D)) v per sequence
    and head; lse the row log-sum-exp of the scores (what the flash kernel keeps), att the probabilities."""
    _, _, v = _heads(qkv, b, t, h)
    s = attention_scores(qkv, b, t, h)
    m = s.max(-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(s - m).sum(-1))
    att = np.exp(s - lse[..., None])
    y = (att @ v).transpose(0, 2, 1, 3).reshape(b * t, -1)
    return y, lse, att


def attention_backward(dy, lse, qkv, b, t, h):
    """dqkv (B*T, 3C) from dy (B*T, C) and the forward's lse: the probabilities recomputed from it."""
    q, k, v = _heads(qkv, b, t, h)
    d = q.shape[-1]
    att = np.exp(attention_scores(qkv, b, t, h) - lse[..., None])
    dyh = dy.reshape(b, t, h, d).transpose(0, 2, 1, 3)
    dv = att.transpose(0, 1, 3, 2) @ dyh
    ds = softmax_causal_backward(dyh @ v.transpose(0, 1, 3, 2), att, 1.0 / np.sqrt(d))
    dq, dk = ds @ k, ds.transpose(0, 1, 3, 2) @ q
    out = np.empty_like(qkv)
    oq, ok, ov = _heads(out, b, t, h)
    oq[...], ok[...], ov[...] = dq, dk, dv
    return out


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_cell_forward(a, c_prev):
    """(gates, c, tc, h) of one LSTM step from pre-activations a (B, 4H) = [i | f | g | o]."""
    hh = a.shape[1] // 4
    i, f, g, o = _sigmoid(a[:, :hh]), _sigmoid(a[:, hh:2 * hh]), np.tanh(a[:, 2 * hh:3 * hh]), _sigmoid(a[:, 3 * hh:])
    c = f * c_prev + i * g
    tc = np.tanh(c)
    return np.concatenate([i, f, g, o], axis=1), c, tc, o * tc


def lstm_cell_backward(dh, dc_next, gates, c_prev, tc):
    """(da, dc_prev) of one LSTM step."""
    hh = gates.shape[1] // 4
    i, f, g, o = gates[:, :hh], gates[:, hh:2 * hh], gates[:, 2 * hh:3 * hh], gates[:, 3 * hh:]
    dc = dc_next + dh * o * (1 - tc * tc)
    da = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                         dh * tc * o * (1 - o)], axis=1)
    return da, dc * f


# --- state vectors (hpr.kernels.statevec): dense operators on (B, 2**N) states. Qubit 0 is the LOW bit
# of the amplitude index, so in Kronecker products qubit N-1 is the LEFTMOST factor.

SV_PAULI = {"I": np.eye(2), "X": np.array([[0, 1], [1, 0]]), "Y": np.array([[0, -1j], [1j, 0]]),
            "Z": np.diag([1, -1])}


def sv_kron_1q(u, q, n):
    """The 2**N x 2**N operator of u on qubit q: kron(I, ..., u, ..., I) with qubit N-1 leftmost."""
    full = np.eye(1)
    for k in range(n - 1, -1, -1):
        full = np.kron(full, u if k == q else np.eye(2))
    return full


def sv_dense(op, qubits, n):
    """The 2**N x 2**N operator of op (2**k x 2**k) on `qubits`, qubits[0] the LOW bit of op's index."""
    dim = 1 << n
    full = np.zeros((dim, dim), complex)
    for i in range(dim):
        r = sum(((i >> q) & 1) << k for k, q in enumerate(qubits))
        rest = i & ~sum(1 << q for q in qubits)
        for c in range(1 << len(qubits)):
            j = rest | sum(((c >> k) & 1) << q for k, q in enumerate(qubits))
            full[i, j] = op[r, c]
    return full


def sv_controlled_op(u, ncontrols):
    """The (2**(k+1))-square matrix of u on the top bit where the k low bits are all 1 (controls first)."""
    k = ncontrols
    op = np.eye(2 << k, dtype=complex)
    on = (1 << k) - 1  # controls all 1; target is bit k
    idx = [on, on | (1 << k)]
    op[np.ix_(idx, idx)] = u
    return op


def sv_apply(state, ops, qubits):
    """state (B, 2**N) with ops[b] (or one op) on `qubits`, as a new complex128 array."""
    b, dim = state.shape
    n = dim.bit_length() - 1
    ops = np.asarray(ops)
    out = np.empty((b, dim), complex)
    for s in range(b):
        op = ops if ops.ndim == 2 else ops[s]
        out[s] = sv_dense(op, qubits, n) @ state[s].astype(complex)
    return out


def sv_expval_z(state):
    """(B, N): sum_i |psi_i|^2 (1 - 2 bit_q(i))."""
    n = state.shape[1].bit_length() - 1
    p = np.abs(state.astype(complex)) ** 2
    signs = np.array([[1 - 2 * ((i >> q) & 1) for q in range(n)] for i in range(state.shape[1])])
    return p @ signs


def sv_expval_pauli(state, pauli):
    """(B,): Re <psi|P|psi>, pauli[i] acting on qubit i (so the Kronecker product runs right to left)."""
    full = np.eye(1)
    for c in reversed(pauli):
        full = np.kron(full, SV_PAULI[c])
    psi = state.astype(complex)
    return np.real(np.einsum("bi,ij,bj->b", psi.conj(), full, psi))


def sv_apply_tensor(state, op, qubits):
    """The same as sv_apply for one shared op, by tensor contraction (fast enough for N ~ 16): the state
    as a (B, 2, ..., 2) tensor whose axis 1 + N-1-q is qubit q."""
    b, dim = state.shape
    n = dim.bit_length() - 1
    k = len(qubits)
    t = state.astype(complex).reshape((b,) + (2,) * n)
    axes = [1 + n - 1 - q for q in reversed(qubits)]  # op's row index: qubits[-1] is its top bit
    opt = np.asarray(op, complex).reshape((2,) * (2 * k))
    t = np.tensordot(opt, t, axes=(list(range(k, 2 * k)), axes))  # op's out axes come first
    t = np.moveaxis(t, list(range(k)), axes)
    return t.reshape(b, dim)
