# The Cython face of csrc/nn.c (included by _kernels.pyx): size checks, pointers, GIL released.
# Each function takes the element width (4 = float32, 8 = float64) and dispatches to _f32 or _f64.
from libc.stdint cimport int32_t

cdef extern from "nn.h" nogil:
    void hpr_layernorm_forward_f32(float *out, float *mean, float *rstd, const float *x, const float *w,
                                   const float *b, int64_t N, int64_t C, double eps, int nthreads)
    void hpr_layernorm_forward_f64(double *out, double *mean, double *rstd, const double *x,
                                   const double *w, const double *b, int64_t N, int64_t C, double eps,
                                   int nthreads)
    void hpr_layernorm_backward_f32(float *dx, float *dw, float *db, const float *dout, const float *x,
                                    const float *w, const float *mean, const float *rstd, int64_t N,
                                    int64_t C, float *scratch, int nthreads)
    void hpr_layernorm_backward_f64(double *dx, double *dw, double *db, const double *dout,
                                    const double *x, const double *w, const double *mean,
                                    const double *rstd, int64_t N, int64_t C, double *scratch,
                                    int nthreads)
    void hpr_softmax_causal_forward_f32(float *att, const float *pre, int64_t BH, int64_t T, double scale,
                                        int nthreads)
    void hpr_softmax_causal_forward_f64(double *att, const double *pre, int64_t BH, int64_t T,
                                        double scale, int nthreads)
    void hpr_softmax_causal_backward_f32(float *dpre, const float *datt, const float *att, int64_t BH,
                                         int64_t T, double scale, int nthreads)
    void hpr_softmax_causal_backward_f64(double *dpre, const double *datt, const double *att,
                                         int64_t BH, int64_t T, double scale, int nthreads)
    void hpr_gelu_forward_f32(float *out, float *x, const float *bias, int64_t N, int64_t C, int nthreads)
    void hpr_gelu_forward_f64(double *out, double *x, const double *bias, int64_t N, int64_t C,
                              int nthreads)
    void hpr_gelu_backward_f32(float *dx, const float *x, const float *dout, int64_t n, int nthreads)
    void hpr_gelu_backward_f64(double *dx, const double *x, const double *dout, int64_t n, int nthreads)
    int64_t hpr_crossentropy_f32(float *losses, float *dlogits, const float *logits,
                                 const int32_t *targets, int64_t N, int64_t V, double dscale, int nthreads)
    int64_t hpr_crossentropy_f64(double *losses, double *dlogits, const double *logits,
                                 const int32_t *targets, int64_t N, int64_t V, double dscale, int nthreads)
    int64_t hpr_embedding_forward_f32(float *out, const int32_t *tokens, const float *wte,
                                      const float *wpe, int64_t B, int64_t T, int64_t C, int64_t V,
                                      int nthreads)
    int64_t hpr_embedding_forward_f64(double *out, const int32_t *tokens, const double *wte,
                                      const double *wpe, int64_t B, int64_t T, int64_t C, int64_t V,
                                      int nthreads)
    void hpr_embedding_backward_f32(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                                    int64_t B, int64_t T, int64_t C)
    void hpr_embedding_backward_f64(double *dwte, double *dwpe, const double *dout,
                                    const int32_t *tokens, int64_t B, int64_t T, int64_t C)
    void hpr_bias_residual_f32(float *out, const float *a, const float *bias, const float *x, int64_t N, int64_t C,
                               int nthreads)
    void hpr_bias_residual_f64(double *out, const double *a, const double *bias, const double *x, int64_t N,
                               int64_t C, int nthreads)
    void hpr_bias_backward_f32(float *db, const float *dout, int64_t N, int64_t C, int nthreads)
    void hpr_bias_backward_f64(double *db, const double *dout, int64_t N, int64_t C, int nthreads)
    void hpr_adamw_f32(float *p, const float *g, float *m, float *v, int64_t n, double lr, double beta1,
                       double beta2, double eps, double wd, double bc1, double bc2, double gscale,
                       int nthreads)
    void hpr_adamw_f64(double *p, const double *g, double *m, double *v, int64_t n, double lr,
                       double beta1, double beta2, double eps, double wd, double bc1, double bc2,
                       double gscale, int nthreads)
    int64_t hpr_attention_scratch(int64_t T, int64_t D)
    void hpr_lstm_cell_forward_f32(float *a, float *c, float *tc, float *h, const float *c_prev, int64_t B,
                                   int64_t H)
    void hpr_lstm_cell_forward_f64(double *a, double *c, double *tc, double *h, const double *c_prev,
                                   int64_t B, int64_t H)
    void hpr_lstm_cell_backward_f32(float *da, float *dc_prev, const float *dh, const float *dc_next,
                                    const float *gates, const float *c_prev, const float *tc, int64_t B,
                                    int64_t H)
    void hpr_lstm_cell_backward_f64(double *da, double *dc_prev, const double *dh, const double *dc_next,
                                    const double *gates, const double *c_prev, const double *tc, int64_t B,
                                    int64_t H)
    void hpr_adamw_segments_f32(float *p, const float *g, float *m, float *v, const int64_t *seg, const double *wd,
                                int64_t nseg, int64_t mlo, double lr, double beta1, double beta2, double eps,
                                double bc1, double bc2, double gscale, int nthreads)
    void hpr_adamw_segments_f64(double *p, const double *g, double *m, double *v, const int64_t *seg,
                                const double *wd, int64_t nseg, int64_t mlo, double lr, double beta1, double beta2,
                                double eps, double bc1, double bc2, double gscale, int nthreads)
    double hpr_sumsq_f32(const float *x, int64_t n, int nthreads)
    double hpr_sumsq_f64(const double *x, int64_t n, int nthreads)
    void hpr_attention_forward_f32(float *y, float *lse, const float *q, const float *k, const float *v,
                                   int64_t B, int64_t T, int64_t H, int64_t D, int64_t sq, int64_t sy,
                                   double scale, float *scratch, int nthreads)
    void hpr_attention_forward_f64(double *y, double *lse, const double *q, const double *k,
                                   const double *v, int64_t B, int64_t T, int64_t H, int64_t D, int64_t sq,
                                   int64_t sy, double scale, double *scratch, int nthreads)
    void hpr_attention_backward_f32(float *dq, float *dk, float *dv, const float *dy, const float *y,
                                    const float *lse, const float *q, const float *k, const float *v, int64_t B,
                                    int64_t T, int64_t H, int64_t D, int64_t sq, int64_t sy, double scale,
                                    float *scratch, int nthreads)
    void hpr_attention_backward_f64(double *dq, double *dk, double *dv, const double *dy, const double *y,
                                    const double *lse, const double *q, const double *k, const double *v,
                                    int64_t B, int64_t T, int64_t H, int64_t D, int64_t sq, int64_t sy,
                                    double scale, double *scratch, int nthreads)
    ctypedef void (*hpr_sgemm_fn)(int, int, int, int64_t, int64_t, int64_t, float, const float *, int64_t,
                                  const float *, int64_t, float, float *, int64_t)
    ctypedef void (*hpr_dgemm_fn)(int, int, int, int64_t, int64_t, int64_t, double, const double *, int64_t,
                                  const double *, int64_t, double, double *, int64_t)
    void hpr_matmul_split_f32(hpr_sgemm_fn gemm, float *out, const float *a, const float *b, int64_t M,
                              int64_t N, int64_t K, int ta, int64_t lda, int tb, int64_t ldb, int64_t ldo,
                              int by_rows, int64_t step, float *acc, int nthreads)
    void hpr_matmul_split_f64(hpr_dgemm_fn gemm, double *out, const double *a, const double *b, int64_t M,
                              int64_t N, int64_t K, int ta, int64_t lda, int tb, int64_t ldb, int64_t ldo,
                              int by_rows, int64_t step, double *acc, int nthreads)
    int hpr_nn_isa_widest()
    int hpr_nn_set_isa(int level)
    int hpr_nn_isa()

# Instruction-set levels of the layer kernels (csrc/hpr_clones.h), in order; the import starts on the
# widest this CPU has, hpr.cpu may choose a lower one (HPR_ISA).
ISA_LEVELS = ("baseline", "avx2", "avx512")
hpr_nn_set_isa(hpr_nn_isa_widest())


def isa():
    """(level in use, [levels this build runs on this CPU]) as names from ISA_LEVELS."""
    return ISA_LEVELS[hpr_nn_isa()], list(ISA_LEVELS[:hpr_nn_isa_widest() + 1])


def set_isa(str name):
    """Use the layer kernels compiled for `name` (one of isa()[1]) from now on. Returns the name."""
    if name not in ISA_LEVELS:
        raise ValueError(f"unknown instruction-set level {name!r}; one of {', '.join(ISA_LEVELS)}")
    if hpr_nn_set_isa(ISA_LEVELS.index(name)) < 0:
        raise ValueError(f"this CPU (or build) runs only {', '.join(isa()[1])}, not {name}")
    return name

cdef _View _buf(object obj, bint writable, int64_t count, int isz, str name):
    """A contiguous buffer of exactly `count` elements of `isz` bytes, held for one call."""
    cdef _View v = _View(obj, writable)
    if v.view.len != count * isz:
        raise ValueError(f"{name}: expected {count} elements of {isz} bytes, got {v.view.len} bytes")
    return v


cdef inline int _isz(int isz) except -1:
    if isz != 4 and isz != 8:
        raise ValueError("nn kernels take float32 (4) or float64 (8) buffers")
    return isz


def layernorm_forward(out, mean, rstd, x, w, b, int64_t N, int64_t C, double eps, int isz, int nthreads=1):
    _isz(isz)
    cdef _View o = _buf(out, True, N * C, isz, "out"), mu = _buf(mean, True, N, isz, "mean")
    cdef _View rs = _buf(rstd, True, N, isz, "rstd"), xx = _buf(x, False, N * C, isz, "x")
    cdef _View ww = _buf(w, False, C, isz, "w"), bb = _buf(b, False, C, isz, "b")
    with nogil:
        if isz == 4:
            hpr_layernorm_forward_f32(<float *>o.view.buf, <float *>mu.view.buf, <float *>rs.view.buf,
                                      <const float *>xx.view.buf, <const float *>ww.view.buf,
                                      <const float *>bb.view.buf, N, C, eps, nthreads)
        else:
            hpr_layernorm_forward_f64(<double *>o.view.buf, <double *>mu.view.buf, <double *>rs.view.buf,
                                      <const double *>xx.view.buf, <const double *>ww.view.buf,
                                      <const double *>bb.view.buf, N, C, eps, nthreads)


def layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, scratch, int64_t N, int64_t C, int isz,
                       int nthreads=1):
    _isz(isz)
    cdef _View ddx = _buf(dx, True, N * C, isz, "dx"), ddw = _buf(dw, True, C, isz, "dw")
    cdef _View ddb = _buf(db, True, C, isz, "db"), g = _buf(dout, False, N * C, isz, "dout")
    cdef _View xx = _buf(x, False, N * C, isz, "x"), ww = _buf(w, False, C, isz, "w")
    cdef _View mu = _buf(mean, False, N, isz, "mean"), rs = _buf(rstd, False, N, isz, "rstd")
    cdef int nt = nthreads if nthreads > 1 else 1
    cdef _View sc = _buf(scratch, True, 2 * C * nt, isz, "scratch")
    with nogil:
        if isz == 4:
            hpr_layernorm_backward_f32(<float *>ddx.view.buf, <float *>ddw.view.buf, <float *>ddb.view.buf,
                                       <const float *>g.view.buf, <const float *>xx.view.buf,
                                       <const float *>ww.view.buf, <const float *>mu.view.buf,
                                       <const float *>rs.view.buf, N, C, <float *>sc.view.buf, nt)
        else:
            hpr_layernorm_backward_f64(<double *>ddx.view.buf, <double *>ddw.view.buf,
                                       <double *>ddb.view.buf, <const double *>g.view.buf,
                                       <const double *>xx.view.buf, <const double *>ww.view.buf,
                                       <const double *>mu.view.buf, <const double *>rs.view.buf, N, C,
                                       <double *>sc.view.buf, nt)


def softmax_causal_forward(att, pre, int64_t BH, int64_t T, double scale, int isz, int nthreads=1):
    _isz(isz)
    cdef _View a = _buf(att, True, BH * T * T, isz, "att"), p = _buf(pre, False, BH * T * T, isz, "pre")
    with nogil:
        if isz == 4:
            hpr_softmax_causal_forward_f32(<float *>a.view.buf, <const float *>p.view.buf, BH, T, scale,
                                           nthreads)
        else:
            hpr_softmax_causal_forward_f64(<double *>a.view.buf, <const double *>p.view.buf, BH, T, scale,
                                           nthreads)


def softmax_causal_backward(dpre, datt, att, int64_t BH, int64_t T, double scale, int isz, int nthreads=1):
    _isz(isz)
    cdef int64_t n = BH * T * T
    cdef _View d = _buf(dpre, True, n, isz, "dpre"), g = _buf(datt, False, n, isz, "datt")
    cdef _View a = _buf(att, False, n, isz, "att")
    with nogil:
        if isz == 4:
            hpr_softmax_causal_backward_f32(<float *>d.view.buf, <const float *>g.view.buf,
                                            <const float *>a.view.buf, BH, T, scale, nthreads)
        else:
            hpr_softmax_causal_backward_f64(<double *>d.view.buf, <const double *>g.view.buf,
                                            <const double *>a.view.buf, BH, T, scale, nthreads)


def gelu_forward(out, x, bias, int64_t N, int64_t C, int isz, int nthreads=1):
    """bias may be None."""
    _isz(isz)
    cdef _View o = _buf(out, True, N * C, isz, "out"), xx = _buf(x, True, N * C, isz, "x")
    cdef _View bb = _buf(bias, False, C, isz, "bias") if bias is not None else None
    cdef void *bp = bb.view.buf if bb is not None else NULL
    with nogil:
        if isz == 4:
            hpr_gelu_forward_f32(<float *>o.view.buf, <float *>xx.view.buf, <const float *>bp, N, C, nthreads)
        else:
            hpr_gelu_forward_f64(<double *>o.view.buf, <double *>xx.view.buf, <const double *>bp, N, C,
                                 nthreads)


def gelu_backward(dx, x, dout, int64_t n, int isz, int nthreads=1):
    _isz(isz)
    cdef _View d = _buf(dx, True, n, isz, "dx"), xx = _buf(x, False, n, isz, "x")
    cdef _View g = _buf(dout, False, n, isz, "dout")
    with nogil:
        if isz == 4:
            hpr_gelu_backward_f32(<float *>d.view.buf, <const float *>xx.view.buf, <const float *>g.view.buf,
                                  n, nthreads)
        else:
            hpr_gelu_backward_f64(<double *>d.view.buf, <const double *>xx.view.buf,
                                  <const double *>g.view.buf, n, nthreads)


def crossentropy(losses, dlogits, logits, targets, int64_t N, int64_t V, double dscale, int isz,
                 int nthreads=1):
    """dlogits may be None (loss only). targets: int32. Returns the count of out-of-range targets."""
    _isz(isz)
    cdef _View ls = _buf(losses, True, N, isz, "losses"), lg = _buf(logits, False, N * V, isz, "logits")
    cdef _View t = _buf(targets, False, N, 4, "targets")
    cdef _View d = _buf(dlogits, True, N * V, isz, "dlogits") if dlogits is not None else None
    cdef void *dp = d.view.buf if d is not None else NULL
    cdef int64_t bad
    with nogil:
        if isz == 4:
            bad = hpr_crossentropy_f32(<float *>ls.view.buf, <float *>dp, <const float *>lg.view.buf,
                                       <const int32_t *>t.view.buf, N, V, dscale, nthreads)
        else:
            bad = hpr_crossentropy_f64(<double *>ls.view.buf, <double *>dp, <const double *>lg.view.buf,
                                       <const int32_t *>t.view.buf, N, V, dscale, nthreads)
    return bad


def embedding_forward(out, tokens, wte, wpe, int64_t B, int64_t T, int64_t C, int64_t V, int isz,
                      int nthreads=1):
    """Returns the count of tokens outside [0, V)."""
    _isz(isz)
    cdef _View o = _buf(out, True, B * T * C, isz, "out"), tk = _buf(tokens, False, B * T, 4, "tokens")
    cdef _View te = _buf(wte, False, V * C, isz, "wte")
    cdef _View pe = _View(wpe, False)
    cdef int64_t bad
    if pe.view.len < T * C * isz:
        raise ValueError("wpe: fewer positions than T")
    with nogil:
        if isz == 4:
            bad = hpr_embedding_forward_f32(<float *>o.view.buf, <const int32_t *>tk.view.buf,
                                            <const float *>te.view.buf, <const float *>pe.view.buf,
                                            B, T, C, V, nthreads)
        else:
            bad = hpr_embedding_forward_f64(<double *>o.view.buf, <const int32_t *>tk.view.buf,
                                            <const double *>te.view.buf, <const double *>pe.view.buf,
                                            B, T, C, V, nthreads)
    return bad


def embedding_backward(dwte, dwpe, dout, tokens, int64_t B, int64_t T, int64_t C, int64_t V, int isz):
    """Tokens must already be known to lie in [0, V) (embedding_forward counted them)."""
    _isz(isz)
    cdef _View te = _buf(dwte, True, V * C, isz, "dwte")
    cdef _View pe = _View(dwpe, True)
    cdef _View g = _buf(dout, False, B * T * C, isz, "dout"), tk = _buf(tokens, False, B * T, 4, "tokens")
    if pe.view.len < T * C * isz:
        raise ValueError("dwpe: fewer positions than T")
    with nogil:
        if isz == 4:
            hpr_embedding_backward_f32(<float *>te.view.buf, <float *>pe.view.buf, <const float *>g.view.buf,
                                       <const int32_t *>tk.view.buf, B, T, C)
        else:
            hpr_embedding_backward_f64(<double *>te.view.buf, <double *>pe.view.buf,
                                       <const double *>g.view.buf, <const int32_t *>tk.view.buf, B, T, C)


def bias_residual(out, a, bias, x, int64_t N, int64_t C, int isz, int nthreads=1):
    """out = x + (a + bias) over (N, C) rows, or a + bias when x is None; out may be a or x."""
    _isz(isz)
    cdef _View o = _buf(out, True, N * C, isz, "out"), aa = _buf(a, False, N * C, isz, "a")
    cdef _View bb = _buf(bias, False, C, isz, "bias")
    cdef _View xx = _buf(x, False, N * C, isz, "x") if x is not None else None
    cdef void *xp = xx.view.buf if xx is not None else NULL
    with nogil:
        if isz == 4:
            hpr_bias_residual_f32(<float *>o.view.buf, <const float *>aa.view.buf, <const float *>bb.view.buf,
                                  <const float *>xp, N, C, nthreads)
        else:
            hpr_bias_residual_f64(<double *>o.view.buf, <const double *>aa.view.buf, <const double *>bb.view.buf,
                                  <const double *>xp, N, C, nthreads)


def bias_backward(db, dout, int64_t N, int64_t C, int isz, int nthreads=1):
    _isz(isz)
    cdef _View d = _buf(db, True, C, isz, "db"), g = _buf(dout, False, N * C, isz, "dout")
    with nogil:
        if isz == 4:
            hpr_bias_backward_f32(<float *>d.view.buf, <const float *>g.view.buf, N, C, nthreads)
        else:
            hpr_bias_backward_f64(<double *>d.view.buf, <const double *>g.view.buf, N, C, nthreads)


def adamw(p, g, m, v, double lr, double beta1, double beta2, double eps, double wd, double bc1, double bc2,
          double gscale, int isz, int nthreads=1):
    """One AdamW step over four equally long buffers."""
    _isz(isz)
    cdef _View pp = _View(p, True)
    cdef int64_t n = pp.view.len // isz
    cdef _View gg = _buf(g, False, n, isz, "g"), mm = _buf(m, True, n, isz, "m"), vv = _buf(v, True, n, isz, "v")
    with nogil:
        if isz == 4:
            hpr_adamw_f32(<float *>pp.view.buf, <const float *>gg.view.buf, <float *>mm.view.buf,
                          <float *>vv.view.buf, n, lr, beta1, beta2, eps, wd, bc1, bc2, gscale, nthreads)
        else:
            hpr_adamw_f64(<double *>pp.view.buf, <const double *>gg.view.buf, <double *>mm.view.buf,
                          <double *>vv.view.buf, n, lr, beta1, beta2, eps, wd, bc1, bc2, gscale, nthreads)


def adamw_segments(p, g, m, v, seg, wd, int64_t mlo, double lr, double beta1, double beta2, double eps,
                   double bc1, double bc2, double gscale, int isz, int nthreads=1):
    """adamw over the segments [seg[2k], seg[2k+1]) of p and g (equally long), m and v from index mlo, each
    decayed by wd[k]. seg: int64 (2 nseg), wd: float64 (nseg); every segment is checked to lie inside."""
    _isz(isz)
    cdef _View pp = _View(p, True), gg = _View(g, False), mm = _View(m, True), vv = _View(v, True)
    cdef _View ss = _View(seg, False), ww = _View(wd, False)
    cdef int64_t n = pp.view.len // isz, nm = mm.view.len // isz, nseg = ww.view.len // 8, k
    cdef const int64_t *s = <const int64_t *>ss.view.buf
    if gg.view.len != pp.view.len or vv.view.len != mm.view.len:
        raise ValueError("adamw_segments: p and g, and m and v, must be equally long")
    if ss.view.len != 2 * nseg * 8:
        raise ValueError("adamw_segments: seg holds two int64 bounds per weight decay in wd")
    for k in range(nseg):
        if not (0 <= s[2 * k] <= s[2 * k + 1] <= n and s[2 * k] >= mlo and s[2 * k + 1] - mlo <= nm):
            raise ValueError(f"adamw_segments: segment [{s[2 * k]}, {s[2 * k + 1]}) is outside the buffers "
                             f"({n} parameters, {nm} moments from {mlo})")
    with nogil:
        if isz == 4:
            hpr_adamw_segments_f32(<float *>pp.view.buf, <const float *>gg.view.buf, <float *>mm.view.buf,
                                   <float *>vv.view.buf, s, <const double *>ww.view.buf, nseg, mlo, lr, beta1,
                                   beta2, eps, bc1, bc2, gscale, nthreads)
        else:
            hpr_adamw_segments_f64(<double *>pp.view.buf, <const double *>gg.view.buf, <double *>mm.view.buf,
                                   <double *>vv.view.buf, s, <const double *>ww.view.buf, nseg, mlo, lr, beta1,
                                   beta2, eps, bc1, bc2, gscale, nthreads)


def sumsq(x, int isz, int nthreads=1):
    _isz(isz)
    cdef _View xx = _View(x, False)
    cdef int64_t n = xx.view.len // isz
    cdef double s
    with nogil:
        if isz == 4:
            s = hpr_sumsq_f32(<const float *>xx.view.buf, n, nthreads)
        else:
            s = hpr_sumsq_f64(<const double *>xx.view.buf, n, nthreads)
    return s


def attention_forward(y, lse, qkv, scratch, int64_t B, int64_t T, int64_t H, int64_t D, double scale, int isz,
                      int nthreads=1):
    """qkv (B*T, 3C) with rows [q | k | v] -> y (B*T, C) and the row log-sum-exp lse (B, H, T); C = H*D."""
    _isz(isz)
    cdef int64_t C = H * D
    cdef int nt = nthreads if nthreads > 1 else 1
    cdef _View yy = _buf(y, True, B * T * C, isz, "y"), ll = _buf(lse, True, B * H * T, isz, "lse")
    cdef _View xx = _buf(qkv, False, B * T * 3 * C, isz, "qkv")
    cdef _View sc = _buf(scratch, True, nt * hpr_attention_scratch(T, D), isz, "scratch")
    cdef char *base = <char *>xx.view.buf
    with nogil:
        if isz == 4:
            hpr_attention_forward_f32(<float *>yy.view.buf, <float *>ll.view.buf, <const float *>base,
                                      <const float *>base + C, <const float *>base + 2 * C, B, T, H, D, 3 * C, C,
                                      scale, <float *>sc.view.buf, nt)
        else:
            hpr_attention_forward_f64(<double *>yy.view.buf, <double *>ll.view.buf, <const double *>base,
                                      <const double *>base + C, <const double *>base + 2 * C, B, T, H, D, 3 * C,
                                      C, scale, <double *>sc.view.buf, nt)


def attention_backward(dqkv, dy, y, lse, qkv, scratch, int64_t B, int64_t T, int64_t H, int64_t D, double scale,
                       int isz, int nthreads=1):
    """dqkv (B*T, 3C) written whole from dy (B*T, C), the forward's y and lse, and qkv."""
    _isz(isz)
    cdef int64_t C = H * D
    cdef int nt = nthreads if nthreads > 1 else 1
    cdef _View dd = _buf(dqkv, True, B * T * 3 * C, isz, "dqkv"), gg = _buf(dy, False, B * T * C, isz, "dy")
    cdef _View yy = _buf(y, False, B * T * C, isz, "y"), ll = _buf(lse, False, B * H * T, isz, "lse")
    cdef _View xx = _buf(qkv, False, B * T * 3 * C, isz, "qkv")
    cdef _View sc = _buf(scratch, True, nt * hpr_attention_scratch(T, D), isz, "scratch")
    cdef char *base = <char *>xx.view.buf
    cdef char *dbase = <char *>dd.view.buf
    with nogil:
        if isz == 4:
            hpr_attention_backward_f32(<float *>dbase, <float *>dbase + C, <float *>dbase + 2 * C,
                                       <const float *>gg.view.buf, <const float *>yy.view.buf,
                                       <const float *>ll.view.buf, <const float *>base, <const float *>base + C,
                                       <const float *>base + 2 * C, B, T, H, D, 3 * C, C, scale,
                                       <float *>sc.view.buf, nt)
        else:
            hpr_attention_backward_f64(<double *>dbase, <double *>dbase + C, <double *>dbase + 2 * C,
                                       <const double *>gg.view.buf, <const double *>yy.view.buf,
                                       <const double *>ll.view.buf, <const double *>base,
                                       <const double *>base + C, <const double *>base + 2 * C, B, T, H, D, 3 * C,
                                       C, scale, <double *>sc.view.buf, nt)


def attention_scratch(int64_t T, int64_t D):
    """Elements of scratch each thread of the attention kernels needs."""
    return hpr_attention_scratch(T, D)


def lstm_cell_forward(a, c, tc, h, c_prev, int64_t B, int64_t H, int isz):
    """a (B, 4H) pre-activations -> activated gates in place; c, tc = tanh(c), h out (B, H)."""
    _isz(isz)
    cdef _View aa = _buf(a, True, B * 4 * H, isz, "a"), cc = _buf(c, True, B * H, isz, "c")
    cdef _View tt = _buf(tc, True, B * H, isz, "tc"), hh = _buf(h, True, B * H, isz, "h")
    cdef _View cp = _buf(c_prev, False, B * H, isz, "c_prev")
    with nogil:
        if isz == 4:
            hpr_lstm_cell_forward_f32(<float *>aa.view.buf, <float *>cc.view.buf, <float *>tt.view.buf,
                                      <float *>hh.view.buf, <const float *>cp.view.buf, B, H)
        else:
            hpr_lstm_cell_forward_f64(<double *>aa.view.buf, <double *>cc.view.buf, <double *>tt.view.buf,
                                      <double *>hh.view.buf, <const double *>cp.view.buf, B, H)


def lstm_cell_backward(da, dc_prev, dh, dc_next, gates, c_prev, tc, int64_t B, int64_t H, int isz):
    """da (B, 4H) and dc_prev (B, H) from dh, dc_next and the forward's gates, c_prev, tc."""
    _isz(isz)
    cdef _View d = _buf(da, True, B * 4 * H, isz, "da"), dcp = _buf(dc_prev, True, B * H, isz, "dc_prev")
    cdef _View g1 = _buf(dh, False, B * H, isz, "dh"), g2 = _buf(dc_next, False, B * H, isz, "dc_next")
    cdef _View gg = _buf(gates, False, B * 4 * H, isz, "gates"), cp = _buf(c_prev, False, B * H, isz, "c_prev")
    cdef _View tt = _buf(tc, False, B * H, isz, "tc")
    with nogil:
        if isz == 4:
            hpr_lstm_cell_backward_f32(<float *>d.view.buf, <float *>dcp.view.buf, <const float *>g1.view.buf,
                                       <const float *>g2.view.buf, <const float *>gg.view.buf,
                                       <const float *>cp.view.buf, <const float *>tt.view.buf, B, H)
        else:
            hpr_lstm_cell_backward_f64(<double *>d.view.buf, <double *>dcp.view.buf, <const double *>g1.view.buf,
                                       <const double *>g2.view.buf, <const double *>gg.view.buf,
                                       <const double *>cp.view.buf, <const double *>tt.view.buf, B, H)


def matmul_split(size_t gemm, out, a, b, int64_t M, int64_t N, int64_t K, int ta, int64_t lda, int tb, int64_t ldb,
                 int64_t ldo, bint by_rows, int64_t step, int isz, int nthreads=1, acc=None):
    """out (M, N) = op(a) @ op(b) in blocks of `step` rows (by_rows) or columns, one call of the CBLAS ILP64
    gemm at address `gemm` per block, the blocks over nthreads OpenMP threads. a, b, out: buffers whose
    first element is the operand's (strided views reach past the shape: the caller checked the strides);
    ta / tb: the operand is stored transposed, lda / ldb its leading dimension (elements), ldo out's.
    acc: None, or a C-contiguous (M, N) buffer that gets acc += out, block by block."""
    _isz(isz)
    if gemm == 0 or M <= 0 or N <= 0 or K <= 0 or step <= 0:
        raise ValueError("matmul_split: a gemm address, positive sizes and step")
    cdef _View oo = _View(out, True), aa = _View(a, False), bb = _View(b, False)
    cdef _View cc = _buf(acc, True, M * N, isz, "acc") if acc is not None else None
    cdef void *cp = cc.view.buf if cc is not None else NULL
    # the last element each operand's calls touch lies inside its buffer
    if oo.view.len < ((M - 1) * ldo + N) * isz:
        raise ValueError("matmul_split: out is smaller than (M - 1) * ldo + N elements")
    if aa.view.len < ((K - 1) * lda + M if ta else (M - 1) * lda + K) * isz:
        raise ValueError("matmul_split: a is smaller than its shape and leading dimension need")
    if bb.view.len < ((N - 1) * ldb + K if tb else (K - 1) * ldb + N) * isz:
        raise ValueError("matmul_split: b is smaller than its shape and leading dimension need")
    with nogil:
        if isz == 4:
            hpr_matmul_split_f32(<hpr_sgemm_fn>gemm, <float *>oo.view.buf, <const float *>aa.view.buf,
                                 <const float *>bb.view.buf, M, N, K, ta, lda, tb, ldb, ldo, by_rows, step,
                                 <float *>cp, nthreads)
        else:
            hpr_matmul_split_f64(<hpr_dgemm_fn>gemm, <double *>oo.view.buf, <const double *>aa.view.buf,
                                 <const double *>bb.view.buf, M, N, K, ta, lda, tb, ldb, ldo, by_rows, step,
                                 <double *>cp, nthreads)
