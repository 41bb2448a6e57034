/* The body of nn.c's kernels, written once and included for every (instruction-set level, REAL) pair
 * by nn_level.h: REAL = float with FN(x) = x##_f32##<level>, then double with x##_f64##<level>. EXP
 * names the exponential for REAL (a vectorisable polynomial exp for float, libm for double). The
 * attention kernels are in attention_impl.h. No include guard on purpose.
 * Shapes: N rows (= B*T), C channels, V vocabulary, BH = batch*heads, T time. */

NN_KERNEL void FN(hpr_layernorm_forward)(REAL *out, REAL *mean, REAL *rstd, const REAL *x, const REAL *w,
                               const REAL *b, int64_t N, int64_t C, double eps, int nthreads) {
    int par = nthreads > 1 && N * C >= HPR_NN_OMP_MIN;
    (void)par;
    OMP_ROWS
    for (int64_t n = 0; n < N; n++) {
        const REAL *xr = x + n * C;  /* (C) */
        REAL *o = out + n * C;
        REAL s = 0;
        SIMD_SUM(s)
        for (int64_t c = 0; c < C; c++) s += xr[c];
        REAL mu = s / (REAL)C;
        REAL q = 0;
        SIMD_SUM(q)
        for (int64_t c = 0; c < C; c++) { REAL d = xr[c] - mu; q += d * d; }
        REAL rs = (REAL)1 / SQRT(q / (REAL)C + (REAL)eps);
        SIMD
        for (int64_t c = 0; c < C; c++) o[c] = (xr[c] - mu) * rs * w[c] + b[c];
        mean[n] = mu;
        rstd[n] = rs;
    }
}

NN_KERNEL void FN(hpr_layernorm_backward)(REAL *dx, REAL *dw, REAL *db, const REAL *dout, const REAL *x,
                                const REAL *w, const REAL *mean, const REAL *rstd, int64_t N,
                                int64_t C, REAL *scratch, int nthreads) {
    int nt = nthreads < 1 ? 1 : nthreads;
    int par = nt > 1 && N * C >= HPR_NN_OMP_MIN;
    (void)par;
    for (int64_t i = 0; i < 2 * C * nt; i++) scratch[i] = 0;
    OMP_REGION
    {
        REAL *pdw = scratch + 2 * C * OMP_TID;  /* this thread's partial dw, then db */
        REAL *pdb = pdw + C;
        OMP_FOR
        for (int64_t n = 0; n < N; n++) {
            const REAL *xr = x + n * C, *g = dout + n * C;
            REAL *dxr = dx + n * C;
            REAL mu = mean[n], rs = rstd[n];
            /* dnorm = g * w; dx += (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)) * rstd */
            REAL a = 0, bsum = 0;
            SIMD_SUM2(a, bsum)
            for (int64_t c = 0; c < C; c++) {
                REAL xh = (xr[c] - mu) * rs, dn = g[c] * w[c];
                a += dn;
                bsum += dn * xh;
            }
            a /= (REAL)C;
            bsum /= (REAL)C;
            SIMD
            for (int64_t c = 0; c < C; c++) {
                REAL xh = (xr[c] - mu) * rs;
                dxr[c] += (g[c] * w[c] - a - xh * bsum) * rs;
                pdw[c] += g[c] * xh;
                pdb[c] += g[c];
            }
        }
    }
    for (int t = 0; t < nt; t++) {
        const REAL *pdw = scratch + 2 * C * t, *pdb = pdw + C;
        for (int64_t c = 0; c < C; c++) { dw[c] += pdw[c]; db[c] += pdb[c]; }
    }
}

NN_KERNEL void FN(hpr_softmax_causal_forward)(REAL *att, const REAL *pre, int64_t BH, int64_t T, double scale,
                                    int nthreads) {
    int64_t rows = BH * T;
    int par = nthreads > 1 && rows * T >= HPR_NN_OMP_MIN;
    (void)par;
    REAL sc = (REAL)scale;
    OMP_ROWS
    for (int64_t r = 0; r < rows; r++) {
        int64_t i = r % T;  /* query position: keys 0..i are visible */
        const REAL *p = pre + r * T;
        REAL *a = att + r * T;
        REAL m = p[0];
        SIMD_MAX(m)
        for (int64_t j = 1; j <= i; j++) m = p[j] > m ? p[j] : m;
        m *= sc;  /* max(sc * p) = sc * max(p): sc > 0 */
        REAL s = 0;
        SIMD_SUM(s)
        for (int64_t j = 0; j <= i; j++) { REAL e = EXP(p[j] * sc - m); a[j] = e; s += e; }
        REAL inv = (REAL)1 / s;
        SIMD
        for (int64_t j = 0; j <= i; j++) a[j] *= inv;
        for (int64_t j = i + 1; j < T; j++) a[j] = 0;
    }
}

NN_KERNEL void FN(hpr_softmax_causal_backward)(REAL *dpre, const REAL *datt, const REAL *att, int64_t BH,
                                     int64_t T, double scale, int nthreads) {
    int64_t rows = BH * T;
    int par = nthreads > 1 && rows * T >= HPR_NN_OMP_MIN;
    (void)par;
    REAL sc = (REAL)scale;
    OMP_ROWS
    for (int64_t r = 0; r < rows; r++) {
        int64_t i = r % T;
        const REAL *a = att + r * T, *g = datt + r * T;
        REAL *d = dpre + r * T;
        REAL s = 0;
        SIMD_SUM(s)
        for (int64_t j = 0; j <= i; j++) s += a[j] * g[j];
        SIMD
        for (int64_t j = 0; j <= i; j++) d[j] = sc * a[j] * (g[j] - s);
        for (int64_t j = i + 1; j < T; j++) d[j] = 0;
    }
}

/* gelu_tanh(x) = x/2 * (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2/pi), computed as x * sigmoid(2u):
 * (1 + tanh(u)) / 2 = sigmoid(2u), no cancellation for x << 0 */
static inline REAL FN(gelu_tanh)(REAL v) {
    const REAL k = (REAL)0.7978845608028654, c3 = (REAL)0.044715;
    REAL z = (REAL)2 * k * (v + c3 * v * v * v);
    z = z < -GELU_ZMAX ? -GELU_ZMAX : z;
    z = z > GELU_ZMAX ? GELU_ZMAX : z;
    return v / ((REAL)1 + EXP_INRANGE(-z));
}

NN_KERNEL void FN(hpr_gelu_forward)(REAL *out, REAL *x, const REAL *bias, int64_t N, int64_t C, int nthreads) {
    int par = nthreads > 1 && N * C >= HPR_NN_OMP_MIN;
    (void)par;
    OMP_ROWS
    for (int64_t n = 0; n < N; n++) {
        REAL *xr = x + n * C, *o = out + n * C;
        if (bias) {  /* x + b written back (backward reads it) in the same pass: a pass of its own cost
                      * ~0.4 ns an element here, 40% of the kernel */
            SIMD
            for (int64_t c = 0; c < C; c++) {
                REAL v = xr[c] + bias[c];
                xr[c] = v;
                o[c] = FN(gelu_tanh)(v);
            }
        } else {
            SIMD
            for (int64_t c = 0; c < C; c++) o[c] = FN(gelu_tanh)(xr[c]);
        }
    }
}

NN_KERNEL void FN(hpr_gelu_backward)(REAL *dx, const REAL *x, const REAL *dout, int64_t n, int nthreads) {
    int par = nthreads > 1 && n >= HPR_NN_OMP_MIN;
    (void)par;
    const REAL k = (REAL)0.7978845608028654, c3 = (REAL)0.044715;
    int64_t nb = (n + HPR_NN_CHUNK - 1) / HPR_NN_CHUNK;
    OMP_ROWS
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t lo = blk * HPR_NN_CHUNK, hi = lo + HPR_NN_CHUNK < n ? lo + HPR_NN_CHUNK : n;
        SIMD
        for (int64_t i = lo; i < hi; i++) {
            /* with s = sigmoid(2u), u = k (x + c3 x^3): gelu' = s + 2 x s (1 - s) du/dx */
            REAL v = x[i];
            REAL z = (REAL)2 * k * (v + c3 * v * v * v);
            z = z < -GELU_ZMAX ? -GELU_ZMAX : z;
            z = z > GELU_ZMAX ? GELU_ZMAX : z;
            REAL s = (REAL)1 / ((REAL)1 + EXP_INRANGE(-z));
            REAL du = k * ((REAL)1 + (REAL)3 * c3 * v * v);
            dx[i] = dout[i] * (s + (REAL)2 * v * s * ((REAL)1 - s) * du);
        }
    }
}

NN_KERNEL int64_t FN(hpr_crossentropy)(REAL *losses, REAL *dlogits, const REAL *logits, const int32_t *targets,
                             int64_t N, int64_t V, double dscale, int nthreads) {
    int par = nthreads > 1 && N * V >= HPR_NN_OMP_MIN;
    (void)par;
    int64_t bad = 0;
    REAL ds = (REAL)dscale;
    OMP_ROWS_BAD
    for (int64_t n = 0; n < N; n++) {
        const REAL *l = logits + n * V;  /* (V) */
        int32_t t = targets[n];
        if (t < 0 || t >= V) { bad++; continue; }
        REAL lt = l[t];
        REAL m = l[0];
        SIMD_MAX(m)
        for (int64_t v = 1; v < V; v++) m = l[v] > m ? l[v] : m;
        REAL s = 0;
        if (dlogits) {
            REAL *d = dlogits + n * V;  /* may be l itself: l is not read again after this loop */
            SIMD_SUM(s)
            for (int64_t v = 0; v < V; v++) { REAL e = EXP(l[v] - m); d[v] = e; s += e; }
            REAL f = ds / s;
            SIMD
            for (int64_t v = 0; v < V; v++) d[v] *= f;
            d[t] -= ds;
        } else {
            SIMD_SUM(s)
            for (int64_t v = 0; v < V; v++) s += EXP(l[v] - m);
        }
        losses[n] = m + LOG(s) - lt;
    }
    return bad;
}

NN_KERNEL int64_t FN(hpr_embedding_forward)(REAL *out, const int32_t *tokens, const REAL *wte, const REAL *wpe,
                                  int64_t B, int64_t T, int64_t C, int64_t V, int nthreads) {
    int64_t N = B * T, bad = 0;
    int par = nthreads > 1 && N * C >= HPR_NN_OMP_MIN;
    (void)par;
    OMP_ROWS_BAD
    for (int64_t n = 0; n < N; n++) {
        int32_t tok = tokens[n];
        REAL *o = out + n * C;
        const REAL *pe = wpe + (n % T) * C;
        if (tok < 0 || tok >= V) { bad++; continue; }
        const REAL *te = wte + (int64_t)tok * C;
        SIMD
        for (int64_t c = 0; c < C; c++) o[c] = te[c] + pe[c];
    }
    return bad;
}

NN_KERNEL void FN(hpr_embedding_backward)(REAL *dwte, REAL *dwpe, const REAL *dout, const int32_t *tokens,
                                int64_t B, int64_t T, int64_t C) {
    for (int64_t n = 0; n < B * T; n++) {
        const REAL *g = dout + n * C;
        REAL *te = dwte + (int64_t)tokens[n] * C, *pe = dwpe + (n % T) * C;
        SIMD
        for (int64_t c = 0; c < C; c++) { te[c] += g[c]; pe[c] += g[c]; }
    }
}

/* out = x + (a + bias) per row (x NULL: a + bias): the same two roundings as numpy's a += bias, then
 * x + a, in one pass; rows are independent, so any split over threads gives the same bits. */
NN_KERNEL void FN(hpr_bias_residual)(REAL *out, const REAL *a, const REAL *bias, const REAL *x, int64_t N,
                                     int64_t C, int nthreads) {
    int par = nthreads > 1 && N * C >= HPR_NN_OMP_MIN;
    (void)par;
    OMP_ROWS
    for (int64_t n = 0; n < N; n++) {
        const REAL *ar = a + n * C;  /* (C) */
        REAL *o = out + n * C;
        if (x) {
            const REAL *xr = x + n * C;
            SIMD
            for (int64_t c = 0; c < C; c++) o[c] = xr[c] + (ar[c] + bias[c]);
        } else {
            SIMD
            for (int64_t c = 0; c < C; c++) o[c] = ar[c] + bias[c];
        }
    }
}

/* db[c] += sum over n of dout[n, c]. Threads take blocks of whole columns (one block each, a multiple of
 * 16 columns), each column summed over the rows in order: the same sums as one thread, bit for bit.
 * A memory-bound pass (~0.1 ns an element on one thread here): a second thread, reading every row's other
 * half, made it 1.1-2.5x slower on the (2048, 128 | 384 | 512) gradients of preset S, so threads start
 * only at HPR_NN_BIAS_OMP_MIN elements (nn.c). */
NN_KERNEL void FN(hpr_bias_backward)(REAL *db, const REAL *dout, int64_t N, int64_t C, int nthreads) {
    int nt = nthreads < 1 ? 1 : nthreads;
    int par = nt > 1 && N * C >= HPR_NN_BIAS_OMP_MIN && C >= 32;
    int64_t bc = par ? ((C + nt - 1) / nt + 15) / 16 * 16 : C;  /* columns per block */
    int64_t nb = (C + bc - 1) / bc;
    OMP_ROWS
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t c0 = blk * bc, c1 = c0 + bc < C ? c0 + bc : C;
        for (int64_t n = 0; n < N; n++) {
            const REAL *g = dout + n * C;
            SIMD
            for (int64_t c = c0; c < c1; c++) db[c] += g[c];
        }
    }
}

/* AdamW on the segments [seg[2k], seg[2k+1]) of p and g, segment k decayed by wd[k], the moments of
 * element j at j - mlo. The segments' elements side by side form one index space of `total`; threads take
 * blocks of HPR_NN_CHUNK of it (a block may span segments); each element's update depends on that
 * element alone, so any split gives the same bits (hpr_adamw is the one-segment case). */
NN_KERNEL void FN(hpr_adamw_segments)(REAL *p, const REAL *g, REAL *m, REAL *v, const int64_t *seg,
                                      const double *wd, int64_t nseg, int64_t mlo, double lr, double beta1,
                                      double beta2, double eps, double bc1, double bc2, double gscale,
                                      int nthreads) {
    int64_t total = 0;
    for (int64_t k = 0; k < nseg; k++) total += seg[2 * k + 1] - seg[2 * k];
    int par = nthreads > 1 && total >= HPR_NN_OMP_MIN;
    (void)par;
    const REAL b1 = (REAL)beta1, b2 = (REAL)beta2, gs = (REAL)gscale, ep = (REAL)eps;
    const REAL ib1 = (REAL)(1.0 / bc1), ib2 = (REAL)(1.0 / bc2), step = (REAL)lr, one = 1;
    int64_t nb = (total + HPR_NN_CHUNK - 1) / HPR_NN_CHUNK;
    OMP_ROWS
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t lo = blk * HPR_NN_CHUNK, hi = lo + HPR_NN_CHUNK < total ? lo + HPR_NN_CHUNK : total;
        int64_t k = 0, at = 0;  /* segment k starts at `at` in the joined index space */
        while (at + (seg[2 * k + 1] - seg[2 * k]) <= lo) { at += seg[2 * k + 1] - seg[2 * k]; k++; }
        while (lo < hi) {
            int64_t len = seg[2 * k + 1] - seg[2 * k];
            int64_t j0 = seg[2 * k] + (lo - at), j1 = seg[2 * k] + ((at + len < hi ? at + len : hi) - at);
            const REAL decay = (REAL)(1.0 - lr * wd[k]);
            REAL *mk = m + (j0 - mlo), *vk = v + (j0 - mlo);  /* the moments of element j0 */
            SIMD
            for (int64_t i = 0; i < j1 - j0; i++) {
                REAL gi = g[j0 + i] * gs;
                REAL mi = b1 * mk[i] + (one - b1) * gi;
                REAL vi = b2 * vk[i] + (one - b2) * gi * gi;
                mk[i] = mi;
                vk[i] = vi;
                p[j0 + i] = p[j0 + i] * decay - step * (mi * ib1) / (SQRT(vi * ib2) + ep);
            }
            lo += j1 - j0;
            at += len;
            k++;
        }
    }
}

/* AdamW on p[0:n]: one segment of hpr_adamw_segments (the same blocks, the same bits). */
NN_KERNEL void FN(hpr_adamw)(REAL *p, const REAL *g, REAL *m, REAL *v, int64_t n, double lr, double beta1,
                   double beta2, double eps, double wd, double bc1, double bc2, double gscale,
                   int nthreads) {
    const int64_t seg[2] = {0, n};
    FN(hpr_adamw_segments)(p, g, m, v, seg, &wd, 1, 0, lr, beta1, beta2, eps, bc1, bc2, gscale, nthreads);
}

NN_KERNEL double FN(hpr_sumsq)(const REAL *x, int64_t n, int nthreads) {
    int par = nthreads > 1 && n >= HPR_NN_OMP_MIN;
    (void)par;
    double s = 0;
    int64_t nb = (n + HPR_NN_CHUNK - 1) / HPR_NN_CHUNK;
    OMP_ROWS_SUM(s)
    for (int64_t blk = 0; blk < nb; blk++) {
        int64_t lo = blk * HPR_NN_CHUNK, hi = lo + HPR_NN_CHUNK < n ? lo + HPR_NN_CHUNK : n;
        double part = 0;
        SIMD_SUM(part)
        for (int64_t i = lo; i < hi; i++) part += (double)x[i] * (double)x[i];
        s += part;
    }
    return s;
}

/* ---- LSTM cell (one time step), gates laid out [i | f | g | o], each H wide ----
 * forward: a (B, 4H) pre-activations in, activated gates out (in place); c = f*c_prev + i*g,
 * tc = tanh(c), h = o*tc. backward: from dh (gradient of h) and dc_next (of c, through the next
 * step), writes da (B, 4H) and dc_prev (B, H) (dc_prev may be dc_next). float uses the vectorised
 * exp (and tanh from it), double libm's, for the gradient checks. */
NN_KERNEL void FN(hpr_lstm_cell_forward)(REAL *a, REAL *c, REAL *tc, REAL *h, const REAL *c_prev, int64_t B,
                                          int64_t H) {
    for (int64_t n = 0; n < B; n++) {
        REAL *an = a + n * 4 * H;
        SIMD
        for (int64_t j = 0; j < H; j++) {
            REAL i = (REAL)1 / ((REAL)1 + LEXP(-an[j]));
            REAL f = (REAL)1 / ((REAL)1 + LEXP(-an[H + j]));
            REAL g = LTANH(an[2 * H + j]);
            REAL o = (REAL)1 / ((REAL)1 + LEXP(-an[3 * H + j]));
            an[j] = i, an[H + j] = f, an[2 * H + j] = g, an[3 * H + j] = o;
            REAL cn = f * c_prev[n * H + j] + i * g;
            REAL t = LTANH(cn);
            c[n * H + j] = cn, tc[n * H + j] = t, h[n * H + j] = o * t;
        }
    }
}

NN_KERNEL void FN(hpr_lstm_cell_backward)(REAL *da, REAL *dc_prev, const REAL *dh, const REAL *dc_next,
                                           const REAL *gates, const REAL *c_prev, const REAL *tc, int64_t B,
                                           int64_t H) {
    for (int64_t n = 0; n < B; n++) {
        const REAL *gn = gates + n * 4 * H;
        REAL *dn = da + n * 4 * H;
        SIMD
        for (int64_t j = 0; j < H; j++) {
            int64_t k = n * H + j;
            REAL i = gn[j], f = gn[H + j], g = gn[2 * H + j], o = gn[3 * H + j], t = tc[k];
            REAL dc = dc_next[k] + dh[k] * o * ((REAL)1 - t * t);
            dn[j] = dc * g * i * ((REAL)1 - i);
            dn[H + j] = dc * c_prev[k] * f * ((REAL)1 - f);
            dn[2 * H + j] = dc * i * ((REAL)1 - g * g);
            dn[3 * H + j] = dh[k] * t * o * ((REAL)1 - o);
            dc_prev[k] = dc * f;
        }
    }
}
