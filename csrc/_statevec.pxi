# The Cython face of csrc/statevec.c (included by _kernels.pyx): size checks, pointers, GIL released.
# Each function takes the complex element width (8 = complex64, 16 = complex128) and dispatches to
# _f32 or _f64; `state` is (B, 2**N) complex, matrices/diagonals hold `nu` (1 shared or B) blocks.

cdef extern from "statevec.h" nogil:
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
    void hpr_sv_expval_pauli_f32(double *out, const float *psi, int64_t B, int N, int64_t xmask,
                                 int64_t zmask, int ny, int nthreads)
    void hpr_sv_expval_pauli_f64(double *out, const double *psi, int64_t B, int N, int64_t xmask,
                                 int64_t zmask, int ny, int nthreads)


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
