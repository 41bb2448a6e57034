# The Cython face of csrc/statevec.c (included by _kernels.pyx): size checks, pointers, GIL released.
# Each function takes the complex element width (8 = complex64, 16 = complex128) and dispatches to
# _f32 or _f64; `state` is (B, 2**N) complex, matrices/diagonals hold `nu` (1 shared or B) blocks.

cdef extern from "statevec.h" nogil:
    int64_t hpr_sv_far_bytes(int64_t nbytes)
    void hpr_sv_apply_1q_f32(float *psi, int64_t B, int N, int q, int64_t cmask, const float *U,
                             int64_t ustride, int nthreads)
    void hpr_sv_apply_1q_f64(double *psi, int64_t B, int N, int q, int64_t cmask, const double *U,
                             int64_t ustride, int nthreads)
    void hpr_sv_apply_2q_f32(float *psi, int64_t B, int N, int q1, int q2, const float *U,
                             int64_t ustride, int nthreads)
    void hpr_sv_apply_2q_f64(double *psi, int64_t B, int N, int q1, int q2, const double *U,
                             int64_t ustride, int nthreads)
    void hpr_sv_apply_diag_1q_f32(float *psi, int64_t B, int N, int q, const float *d, int64_t dstride,
                                  int nthreads)
    void hpr_sv_apply_diag_1q_f64(double *psi, int64_t B, int N, int q, const double *d, int64_t dstride,
                                  int nthreads)
    void hpr_sv_apply_diag_2q_f32(float *psi, int64_t B, int N, int q1, int q2, const float *d,
                                  int64_t dstride, int nthreads)
    void hpr_sv_apply_diag_2q_f64(double *psi, int64_t B, int N, int q1, int q2, const double *d,
                                  int64_t dstride, int nthreads)
    void hpr_sv_apply_x_f32(float *psi, int64_t B, int N, int q, int64_t cmask, int nthreads)
    void hpr_sv_apply_x_f64(double *psi, int64_t B, int N, int q, int64_t cmask, int nthreads)
    void hpr_sv_apply_swap_f32(float *psi, int64_t B, int N, int q1, int q2, int nthreads)
    void hpr_sv_apply_swap_f64(double *psi, int64_t B, int N, int q1, int q2, int nthreads)
    void hpr_sv_expval_z_f32(double *out, const float *psi, int64_t B, int N, int nthreads)
    void hpr_sv_expval_z_f64(double *out, const double *psi, int64_t B, int N, int nthreads)
    void hpr_sv_probabilities_f32(float *out, const float *psi, int64_t B, int N, int nthreads)
    void hpr_sv_probabilities_f64(double *out, const double *psi, int64_t B, int N, int nthreads)
    void hpr_sv_pauli_overlap_f32(double *out, const float *lam, const float *psi, int64_t B, int N,
                                  int64_t xmask, int64_t zmask, int ny, int nthreads)
    void hpr_sv_pauli_overlap_f64(double *out, const double *lam, const double *psi, int64_t B, int N,
                                  int64_t xmask, int64_t zmask, int ny, int nthreads)
    void hpr_sv_apply_kq_f32(float *psi, int64_t B, int N, int64_t qmask, const float *U, int nthreads)
    void hpr_sv_apply_kq_f64(double *psi, int64_t B, int N, int64_t qmask, const double *U, int nthreads)
    void hpr_sv_run_f32(float *psi, int64_t B, int N, const int64_t *ops, int64_t nops, const float *mats,
                        const double *fixed, const double *inputs, int64_t nin, const double *weights,
                        int nthreads)
    void hpr_sv_run_f64(double *psi, int64_t B, int N, const int64_t *ops, int64_t nops, const double *mats,
                        const double *fixed, const double *inputs, int64_t nin, const double *weights,
                        int nthreads)
    void hpr_sv_adjoint_f32(float *psi, float *lam, int64_t B, int N, const double *g, const int64_t *ops,
                            int64_t nops, const float *imats, const double *fixed, const double *inputs,
                            int64_t nin, const double *weights, int64_t nw, double *din, double *dw,
                            int nthreads)
    void hpr_sv_adjoint_f64(double *psi, double *lam, int64_t B, int N, const double *g, const int64_t *ops,
                            int64_t nops, const double *imats, const double *fixed, const double *inputs,
                            int64_t nin, const double *weights, int64_t nw, double *din, double *dw,
                            int nthreads)
    void hpr_sv_expval_pauli_f32(double *out, const float *psi, int64_t B, int N, int64_t xmask,
                                 int64_t zmask, int ny, int nthreads)
    void hpr_sv_expval_pauli_f64(double *out, const double *psi, int64_t B, int N, int64_t xmask,
                                 int64_t zmask, int ny, int nthreads)


def sv_far_bytes(int64_t nbytes=0):
    """The distance in bytes from which a gate's amplitude pairs are staged through a buffer in cache
    (csrc/statevec.c, "far pairs"; default 2**28): set it when nbytes > 0 (the tests send small states
    down those paths); returns the previous value."""
    return hpr_sv_far_bytes(nbytes)


cdef inline int _csz(int isz, int64_t B, int N, int64_t nu) except -1:
    if isz != 8 and isz != 16:
        raise ValueError("state-vector kernels take complex64 (8) or complex128 (16) buffers")
    if N < 0 or N > 62 or B < 0:
        raise ValueError(f"bad state shape: B={B}, N={N}")
    if nu != 1 and nu != B:
        raise ValueError(f"{nu} matrices for {B} states: pass 1 or B")
    return isz


cdef inline int _qok(int q, int N) except -1:
    if q < 0 or q >= N:
        raise ValueError(f"qubit {q} outside [0, {N})")
    return q


def sv_apply_1q(state, int64_t B, int N, int q, int64_t cmask, U, int64_t nu, int isz, int nthreads=1):
    _csz(isz, B, N, nu)
    _qok(q, N)
    if (cmask >> q) & 1 or cmask >> N:
        raise ValueError("bad control mask")
    cdef _View s = _buf(state, True, B << N, isz, "state"), u = _buf(U, False, 4 * nu, isz, "U")
    cdef int64_t st = 0 if nu == 1 else 8
    with nogil:
        if isz == 8:
            hpr_sv_apply_1q_f32(<float *>s.view.buf, B, N, q, cmask, <const float *>u.view.buf, st, nthreads)
        else:
            hpr_sv_apply_1q_f64(<double *>s.view.buf, B, N, q, cmask, <const double *>u.view.buf, st, nthreads)


def sv_apply_2q(state, int64_t B, int N, int q1, int q2, U, int64_t nu, int isz, int nthreads=1):
    _csz(isz, B, N, nu)
    _qok(q1, N)
    _qok(q2, N)
    if q1 == q2:
        raise ValueError("q1 == q2")
    cdef _View s = _buf(state, True, B << N, isz, "state"), u = _buf(U, False, 16 * nu, isz, "U")
    cdef int64_t st = 0 if nu == 1 else 32
    with nogil:
        if isz == 8:
            hpr_sv_apply_2q_f32(<float *>s.view.buf, B, N, q1, q2, <const float *>u.view.buf, st, nthreads)
        else:
            hpr_sv_apply_2q_f64(<double *>s.view.buf, B, N, q1, q2, <const double *>u.view.buf, st, nthreads)


def sv_apply_diag_1q(state, int64_t B, int N, int q, d, int64_t nu, int isz, int nthreads=1):
    _csz(isz, B, N, nu)
    _qok(q, N)
    cdef _View s = _buf(state, True, B << N, isz, "state"), dd = _buf(d, False, 2 * nu, isz, "d")
    cdef int64_t st = 0 if nu == 1 else 4
    with nogil:
        if isz == 8:
            hpr_sv_apply_diag_1q_f32(<float *>s.view.buf, B, N, q, <const float *>dd.view.buf, st, nthreads)
        else:
            hpr_sv_apply_diag_1q_f64(<double *>s.view.buf, B, N, q, <const double *>dd.view.buf, st, nthreads)


def sv_apply_diag_2q(state, int64_t B, int N, int q1, int q2, d, int64_t nu, int isz, int nthreads=1):
    _csz(isz, B, N, nu)
    _qok(q1, N)
    _qok(q2, N)
    if q1 == q2:
        raise ValueError("q1 == q2")
    cdef _View s = _buf(state, True, B << N, isz, "state"), dd = _buf(d, False, 4 * nu, isz, "d")
    cdef int64_t st = 0 if nu == 1 else 8
    with nogil:
        if isz == 8:
            hpr_sv_apply_diag_2q_f32(<float *>s.view.buf, B, N, q1, q2, <const float *>dd.view.buf, st,
                                     nthreads)
        else:
            hpr_sv_apply_diag_2q_f64(<double *>s.view.buf, B, N, q1, q2, <const double *>dd.view.buf, st,
                                     nthreads)


def sv_apply_x(state, int64_t B, int N, int q, int64_t cmask, int isz, int nthreads=1):
    _csz(isz, B, N, 1)
    _qok(q, N)
    if (cmask >> q) & 1 or cmask >> N:
        raise ValueError("bad control mask")
    cdef _View s = _buf(state, True, B << N, isz, "state")
    with nogil:
        if isz == 8:
            hpr_sv_apply_x_f32(<float *>s.view.buf, B, N, q, cmask, nthreads)
        else:
            hpr_sv_apply_x_f64(<double *>s.view.buf, B, N, q, cmask, nthreads)


def sv_apply_swap(state, int64_t B, int N, int q1, int q2, int isz, int nthreads=1):
    _csz(isz, B, N, 1)
    _qok(q1, N)
    _qok(q2, N)
    if q1 == q2:
        raise ValueError("q1 == q2")
    cdef _View s = _buf(state, True, B << N, isz, "state")
    with nogil:
        if isz == 8:
            hpr_sv_apply_swap_f32(<float *>s.view.buf, B, N, q1, q2, nthreads)
        else:
            hpr_sv_apply_swap_f64(<double *>s.view.buf, B, N, q1, q2, nthreads)


def sv_expval_z(out, state, int64_t B, int N, int isz, int nthreads=1):
    """out: (B, N) float64."""
    _csz(isz, B, N, 1)
    cdef _View s = _buf(state, False, B << N, isz, "state"), o = _buf(out, True, B * N, 8, "out")
    with nogil:
        if isz == 8:
            hpr_sv_expval_z_f32(<double *>o.view.buf, <const float *>s.view.buf, B, N, nthreads)
        else:
            hpr_sv_expval_z_f64(<double *>o.view.buf, <const double *>s.view.buf, B, N, nthreads)


def sv_probabilities(out, state, int64_t B, int N, int isz, int nthreads=1):
    """out: (B, 2**N) of the state's real type (float32 for complex64)."""
    _csz(isz, B, N, 1)
    cdef _View s = _buf(state, False, B << N, isz, "state"), o = _buf(out, True, B << N, isz // 2, "out")
    with nogil:
        if isz == 8:
            hpr_sv_probabilities_f32(<float *>o.view.buf, <const float *>s.view.buf, B, N, nthreads)
        else:
            hpr_sv_probabilities_f64(<double *>o.view.buf, <const double *>s.view.buf, B, N, nthreads)


def sv_expval_pauli(out, state, int64_t B, int N, int64_t xmask, int64_t zmask, int ny, int isz,
                    int nthreads=1):
    """out: (B,) float64."""
    _csz(isz, B, N, 1)
    if xmask >> N or zmask >> N or xmask < 0 or zmask < 0:
        raise ValueError("bad Pauli masks")
    cdef _View s = _buf(state, False, B << N, isz, "state"), o = _buf(out, True, B, 8, "out")
    with nogil:
        if isz == 8:
            hpr_sv_expval_pauli_f32(<double *>o.view.buf, <const float *>s.view.buf, B, N, xmask, zmask, ny,
                                    nthreads)
        else:
            hpr_sv_expval_pauli_f64(<double *>o.view.buf, <const double *>s.view.buf, B, N, xmask, zmask, ny,
                                    nthreads)


def sv_pauli_overlap(out, lam, state, int64_t B, int N, int64_t xmask, int64_t zmask, int ny, int isz,
                     int nthreads=1):
    """out (B,) complex128 = <lam_b| P |psi_b>."""
    _csz(isz, B, N, 1)
    if xmask >> N or zmask >> N or xmask < 0 or zmask < 0:
        raise ValueError("bad Pauli masks")
    cdef int64_t n = B << N
    cdef _View o = _buf(out, True, B, 16, "out")
    cdef _View l = _buf(lam, False, n, isz, "lam"), s = _buf(state, False, n, isz, "state")
    with nogil:
        if isz == 8:
            hpr_sv_pauli_overlap_f32(<double *>o.view.buf, <const float *>l.view.buf, <const float *>s.view.buf,
                                     B, N, xmask, zmask, ny, nthreads)
        else:
            hpr_sv_pauli_overlap_f64(<double *>o.view.buf, <const double *>l.view.buf, <const double *>s.view.buf,
                                     B, N, xmask, zmask, ny, nthreads)


def sv_apply_kq(state, int64_t B, int N, int64_t qmask, U, int isz, int nthreads=1):
    """state <- U (2**k x 2**k, shared) on the 2 <= k <= 5 qubits of qmask."""
    _csz(isz, B, N, 1)
    cdef int k = bin(qmask).count("1")
    if qmask < 0 or qmask >> N or k < 2 or k > 5:
        raise ValueError("qmask must name 2 to 5 qubits of the state")
    cdef _View s = _buf(state, True, B << N, isz, "state"), u = _buf(U, False, 1 << (2 * k), isz, "U")
    with nogil:
        if isz == 8:
            hpr_sv_apply_kq_f32(<float *>s.view.buf, B, N, qmask, <const float *>u.view.buf, nthreads)
        else:
            hpr_sv_apply_kq_f64(<double *>s.view.buf, B, N, qmask, <const double *>u.view.buf, nthreads)


cdef int _program_ok(const int64_t *ops, int64_t nops, int N, int64_t nmats, int64_t nfixed, int64_t nin,
                     int64_t nw) except -1:
    """Every op of a program names valid qubits, a matrix inside mats and a parameter that exists: the C
    trusts them."""
    cdef int64_t k, kind, q0, q1, mask, src, idx, off, need
    cdef int64_t full = (<int64_t>1 << N) - 1
    for k in range(nops):
        kind, q0, q1, mask, src, idx, off = ops[8 * k], ops[8 * k + 1], ops[8 * k + 2], ops[8 * k + 3], \
            ops[8 * k + 4], ops[8 * k + 5], ops[8 * k + 6]
        if kind < 0 or kind > 10 or q0 < 0 or q0 >= N or q1 < 0 or q1 >= N or mask < 0 or mask & ~full:
            raise ValueError(f"op {k}: bad kind or qubits")
        if kind in (1, 3, 5, 10) and q0 == q1:
            raise ValueError(f"op {k}: q0 == q1")
        if kind in (0, 4, 7, 8) and (mask >> q0) & 1:
            raise ValueError(f"op {k}: the target is also a control")
        need = {0: 8, 1: 32, 2: 4, 3: 8}.get(kind, 0)
        if kind == 6:
            need = bin(mask).count("1")
            if need < 2 or need > 5:
                raise ValueError(f"op {k}: a dense block takes 2 to 5 qubits")
            need = 2 << (2 * need)
        if need and (off < 0 or off + need > nmats):
            raise ValueError(f"op {k}: matrix outside mats")
        if kind >= 7:
            lim = {1: nfixed, 2: nin, 3: nw}.get(src, -1)
            if not 0 <= idx < lim:
                raise ValueError(f"op {k}: parameter source {src} index {idx} out of range")
    return 0


def sv_run(state, int64_t B, int N, ops, int64_t nops, mats, fixed, inputs, int64_t nin, weights, int isz,
           int nthreads=1):
    """state <- the program (ops: (nops, 8) int64) on every state; inputs (B, nin) float64."""
    _csz(isz, B, N, 1)
    cdef _View s = _buf(state, True, B << N, isz, "state"), o = _buf(ops, False, 8 * nops, 8, "ops")
    cdef _View m = _View(mats, False), f = _View(fixed, False), w = _View(weights, False)
    cdef _View x = _buf(inputs, False, B * nin, 8, "inputs")
    _program_ok(<const int64_t *>o.view.buf, nops, N, m.view.len // (isz // 2), f.view.len // 8, nin,
                w.view.len // 8)
    with nogil:
        if isz == 8:
            hpr_sv_run_f32(<float *>s.view.buf, B, N, <const int64_t *>o.view.buf, nops, <const float *>m.view.buf,
                           <const double *>f.view.buf, <const double *>x.view.buf, nin, <const double *>w.view.buf,
                           nthreads)
        else:
            hpr_sv_run_f64(<double *>s.view.buf, B, N, <const int64_t *>o.view.buf, nops,
                           <const double *>m.view.buf, <const double *>f.view.buf, <const double *>x.view.buf, nin,
                           <const double *>w.view.buf, nthreads)


def sv_adjoint(state, lam, int64_t B, int N, g, ops, int64_t nops, imats, fixed, inputs, int64_t nin, weights,
               int64_t nw, din, dw, int isz, int nthreads=1):
    """The adjoint sweep of a program (see statevec.h): adds into din (B, nin) and dw (B, nw)."""
    _csz(isz, B, N, 1)
    cdef _View s = _buf(state, True, B << N, isz, "state"), l = _buf(lam, True, B << N, isz, "lam")
    cdef _View o = _buf(ops, False, 8 * nops, 8, "ops"), gg = _buf(g, False, B * N, 8, "g")
    cdef _View m = _View(imats, False), f = _View(fixed, False), w = _buf(weights, False, nw, 8, "weights")
    cdef _View x = _buf(inputs, False, B * nin, 8, "inputs")
    cdef _View di = _buf(din, True, B * nin, 8, "din"), dww = _buf(dw, True, B * nw, 8, "dw")
    _program_ok(<const int64_t *>o.view.buf, nops, N, m.view.len // (isz // 2), f.view.len // 8, nin, nw)
    with nogil:
        if isz == 8:
            hpr_sv_adjoint_f32(<float *>s.view.buf, <float *>l.view.buf, B, N, <const double *>gg.view.buf,
                               <const int64_t *>o.view.buf, nops, <const float *>m.view.buf,
                               <const double *>f.view.buf, <const double *>x.view.buf, nin,
                               <const double *>w.view.buf, nw, <double *>di.view.buf, <double *>dww.view.buf,
                               nthreads)
        else:
            hpr_sv_adjoint_f64(<double *>s.view.buf, <double *>l.view.buf, B, N, <const double *>gg.view.buf,
                               <const int64_t *>o.view.buf, nops, <const double *>m.view.buf,
                               <const double *>f.view.buf, <const double *>x.view.buf, nin,
                               <const double *>w.view.buf, nw, <double *>di.view.buf, <double *>dww.view.buf,
                               nthreads)
