/* The body of statevec.c's kernels, written once and included twice: REAL = float with
 * FN(x) = x##_f32, then REAL = double with FN(x) = x##_f64. No include guard on purpose.
 * psi: (B, 2**N) complex as interleaved REALs; amplitude i of state b is psi[2 ((b << N) + i) + {0, 1}].
 * Sums (expectation values) are accumulated in double for both precisions. */

/* x[j], y[j] <- u00 x[j] + u01 y[j], u10 x[j] + u11 y[j] for j < L (x, y runs of L amplitudes) */
static inline void FN(sv_run_1q)(REAL *restrict x, REAL *restrict y, int64_t L, const REAL *u) {
    const REAL ar = u[0], ai = u[1], br = u[2], bi = u[3], cr = u[4], ci = u[5], dr = u[6], di = u[7];
    SIMD
    for (int64_t j = 0; j < L; j++) {
        REAL xr = x[2 * j], xi = x[2 * j + 1], yr = y[2 * j], yi = y[2 * j + 1];
        x[2 * j] = ar * xr - ai * xi + br * yr - bi * yi;
        x[2 * j + 1] = ar * xi + ai * xr + br * yi + bi * yr;
        y[2 * j] = cr * xr - ci * xi + dr * yr - di * yi;
        y[2 * j + 1] = cr * xi + ci * xr + dr * yi + di * yr;
    }
}

/* x[j] *= d for j < L */
static inline void FN(sv_run_scale)(REAL *restrict x, int64_t L, REAL dr, REAL di) {
    SIMD
    for (int64_t j = 0; j < L; j++) {
        REAL xr = x[2 * j], xi = x[2 * j + 1];
        x[2 * j] = dr * xr - di * xi;
        x[2 * j + 1] = dr * xi + di * xr;
    }
}

/* exchange runs x[0:L] and y[0:L] of amplitudes */
static inline void FN(sv_run_swap)(REAL *restrict x, REAL *restrict y, int64_t L) {
    SIMD
    for (int64_t j = 0; j < 2 * L; j++) {
        REAL t = x[j];
        x[j] = y[j];
        y[j] = t;
    }
}

HPR_KERNEL void FN(hpr_sv_apply_1q)(REAL *psi, int64_t B, int N, int q, int64_t cmask, const REAL *U,
                                    int64_t ustride, int nthreads) {
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    (void)par;
    if (cmask == 0 && q == 0) {
        SV_PAIRS_Q0({
            const REAL *u = U + b * ustride;
            const REAL ar = u[0], ai = u[1], br = u[2], bi = u[3], cr = u[4], ci = u[5], dr = u[6],
                       di = u[7];
            SIMD
            for (int64_t j = 0; j < Lc; j++) {
                REAL *s = x + 4 * j;
                REAL xr = s[0], xi = s[1], yr = s[2], yi = s[3];
                s[0] = ar * xr - ai * xi + br * yr - bi * yi;
                s[1] = ar * xi + ai * xr + br * yi + bi * yr;
                s[2] = cr * xr - ci * xi + dr * yr - di * yi;
                s[3] = cr * xi + ci * xr + dr * yi + di * yr;
            }
        });
        return;
    }
    sv_plan p;
    sv_plan_make(&p, B, N, cmask | (INT64_C(1) << q));
    int64_t off = 2 * (INT64_C(1) << q); /* REALs from the bit-0 to the bit-1 amplitude */
    OMP_ITEMS
    for (int64_t w = 0; w < p.W; w++) {
        const REAL *u = U + (w / p.per) * ustride;
        SV_RUNS(p, w, cmask, FN(sv_run_1q)(x, x + off, p.Lr, u);)
    }
}

HPR_KERNEL void FN(hpr_sv_apply_2q)(REAL *psi, int64_t B, int N, int q1, int q2, const REAL *U,
                                    int64_t ustride, int nthreads) {
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    (void)par;
    sv_plan p;
    sv_plan_make(&p, B, N, (INT64_C(1) << q1) | (INT64_C(1) << q2));
    int64_t o1 = 2 * (INT64_C(1) << q1), o2 = 2 * (INT64_C(1) << q2);
    OMP_ITEMS
    for (int64_t w = 0; w < p.W; w++) {
        const REAL *u = U + (w / p.per) * ustride;
        REAL ur[16], ui[16];
        for (int k = 0; k < 16; k++) { ur[k] = u[2 * k]; ui[k] = u[2 * k + 1]; }
        if (p.Lr < 4) { /* short runs (q1 or q2 is 0 or 1): a plain loop, no SIMD set-up per run */
            for (int64_t r = 0; r < p.Gi; r++) {
                REAL *v0 = psi + 2 * sv_run_base(&p, w, r, N, 0);
                REAL *vs[4] = {v0, v0 + o1, v0 + o2, v0 + o1 + o2};
                REAL xr[4], xi[4];
                for (int c = 0; c < 4; c++) { xr[c] = vs[c][0]; xi[c] = vs[c][1]; }
                for (int k = 0; k < 4; k++) {
                    REAL sr = 0, si = 0;
                    for (int c = 0; c < 4; c++) {
                        sr += ur[4 * k + c] * xr[c] - ui[4 * k + c] * xi[c];
                        si += ur[4 * k + c] * xi[c] + ui[4 * k + c] * xr[c];
                    }
                    vs[k][0] = sr;
                    vs[k][1] = si;
                }
            }
            continue;
        }
        SV_RUNS(p, w, 0, {
        REAL *restrict v0 = x;
        REAL *restrict v1 = v0 + o1, *restrict v2 = v0 + o2, *restrict v3 = v0 + o1 + o2;
        SIMD
        for (int64_t j = 0; j < p.Lr; j++) {
            /* v index c = b(q1) + 2 b(q2) */
            REAL xr[4] = {v0[2 * j], v1[2 * j], v2[2 * j], v3[2 * j]};
            REAL xi[4] = {v0[2 * j + 1], v1[2 * j + 1], v2[2 * j + 1], v3[2 * j + 1]};
            REAL yr[4], yi[4];
            for (int r = 0; r < 4; r++) {
                REAL sr = 0, si = 0;
                for (int c = 0; c < 4; c++) {
                    sr += ur[4 * r + c] * xr[c] - ui[4 * r + c] * xi[c];
                    si += ur[4 * r + c] * xi[c] + ui[4 * r + c] * xr[c];
                }
                yr[r] = sr;
                yi[r] = si;
            }
            v0[2 * j] = yr[0]; v0[2 * j + 1] = yi[0];
            v1[2 * j] = yr[1]; v1[2 * j + 1] = yi[1];
            v2[2 * j] = yr[2]; v2[2 * j + 1] = yi[2];
            v3[2 * j] = yr[3]; v3[2 * j + 1] = yi[3];
        }
        })
    }
}

HPR_KERNEL void FN(hpr_sv_apply_diag_1q)(REAL *psi, int64_t B, int N, int q, const REAL *d,
                                         int64_t dstride, int nthreads) {
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    (void)par;
    if (q == 0) {
        SV_PAIRS_Q0({
            const REAL *e = d + b * dstride;
            const REAL ar = e[0], ai = e[1], br = e[2], bi = e[3];
            SIMD
            for (int64_t j = 0; j < Lc; j++) {
                REAL *s = x + 4 * j;
                REAL xr = s[0], xi = s[1], yr = s[2], yi = s[3];
                s[0] = ar * xr - ai * xi;
                s[1] = ar * xi + ai * xr;
                s[2] = br * yr - bi * yi;
                s[3] = br * yi + bi * yr;
            }
        });
        return;
    }
    sv_plan p;
    sv_plan_make(&p, B, N, INT64_C(1) << q);
    int64_t off = 2 * (INT64_C(1) << q);
    OMP_ITEMS
    for (int64_t w = 0; w < p.W; w++) {
        const REAL *e = d + (w / p.per) * dstride;
        SV_RUNS(p, w, 0, {
            for (int k = 0; k < 2; k++)
                if (e[2 * k] != 1 || e[2 * k + 1] != 0) FN(sv_run_scale)(x + k * off, p.Lr, e[2 * k], e[2 * k + 1]);
        })
    }
}

HPR_KERNEL void FN(hpr_sv_apply_diag_2q)(REAL *psi, int64_t B, int N, int q1, int q2, const REAL *d,
                                         int64_t dstride, int nthreads) {
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    (void)par;
    sv_plan p;
    sv_plan_make(&p, B, N, (INT64_C(1) << q1) | (INT64_C(1) << q2));
    int64_t o1 = 2 * (INT64_C(1) << q1), o2 = 2 * (INT64_C(1) << q2);
    OMP_ITEMS
    for (int64_t w = 0; w < p.W; w++) {
        const REAL *e = d + (w / p.per) * dstride;
        SV_RUNS(p, w, 0, {
            for (int k = 0; k < 4; k++)
                if (e[2 * k] != 1 || e[2 * k + 1] != 0)
                    FN(sv_run_scale)(x + (k & 1) * o1 + (k >> 1) * o2, p.Lr, e[2 * k], e[2 * k + 1]);
        })
    }
}

HPR_KERNEL void FN(hpr_sv_apply_x)(REAL *psi, int64_t B, int N, int q, int64_t cmask, int nthreads) {
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    (void)par;
    if (cmask == 0 && q == 0) {
        SV_PAIRS_Q0({
            SIMD
            for (int64_t j = 0; j < Lc; j++) {
                REAL *s = x + 4 * j;
                REAL xr = s[0], xi = s[1];
                s[0] = s[2]; s[1] = s[3];
                s[2] = xr; s[3] = xi;
            }
        });
        return;
    }
    sv_plan p;
    sv_plan_make(&p, B, N, cmask | (INT64_C(1) << q));
    int64_t off = 2 * (INT64_C(1) << q);
    OMP_ITEMS
    for (int64_t w = 0; w < p.W; w++) {
        SV_RUNS(p, w, cmask, FN(sv_run_swap)(x, x + off, p.Lr);)
    }
}

HPR_KERNEL void FN(hpr_sv_apply_swap)(REAL *psi, int64_t B, int N, int q1, int q2, int nthreads) {
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    (void)par;
    sv_plan p;
    sv_plan_make(&p, B, N, (INT64_C(1) << q1) | (INT64_C(1) << q2));
    int64_t o1 = 2 * (INT64_C(1) << q1), o2 = 2 * (INT64_C(1) << q2);
    OMP_ITEMS
    for (int64_t w = 0; w < p.W; w++) {
        SV_RUNS(p, w, 0, FN(sv_run_swap)(x + o1, x + o2, p.Lr);) /* |..1..0..> <-> |..0..1..> */
    }
}

/* expval_z over blocks [k0, k1) of 2**K amplitudes of one state a: adds into acc[q] the probability
 * of the amplitudes with bit q set and returns the blocks' total probability. Inside a block the
 * bits q < K are folded: the upper half's sum is bit K-1's share; adding the upper half onto the lower
 * leaves the same problem on K-1 bits (2**K adds per block in all). Bits q >= K are constant over a
 * block, which adds its total where the bit is set. */
static double FN(sv_ez_blocks)(const REAL *a, int N, int K, int64_t k0, int64_t k1, double *acc) {
    double tmp[1 << SV_EZ_BITS], total = 0;
    int64_t M = INT64_C(1) << K;
    for (int64_t k = k0; k < k1; k++) {
        const REAL *s = a + 2 * (k << K);
        SIMD
        for (int64_t j = 0; j < M; j++) tmp[j] = (double)s[2 * j] * s[2 * j] + (double)s[2 * j + 1] * s[2 * j + 1];
        for (int q = K - 1; q >= 0; q--) {
            int64_t h = INT64_C(1) << q;
            double sh = 0;
            HPR_PRAGMA(omp simd reduction(+ : sh))
            for (int64_t j = 0; j < h; j++) { sh += tmp[j + h]; tmp[j] += tmp[j + h]; }
            acc[q] += sh;
        }
        total += tmp[0];
        for (int q = K; q < N; q++)
            if (((k << K) >> q) & 1) acc[q] += tmp[0];
    }
    return total;
}

HPR_KERNEL void FN(hpr_sv_expval_z)(double *out, const REAL *psi, int64_t B, int N, int nthreads) {
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    int K = N < SV_EZ_BITS ? N : SV_EZ_BITS;
    int64_t nb = INT64_C(1) << (N - K);
    if (!par || B >= nthreads) { /* one state per thread */
        OMP_ITEMS
        for (int64_t b = 0; b < B; b++) {
            double acc[64] = {0};
            double t = FN(sv_ez_blocks)(psi + 2 * (b << N), N, K, 0, nb, acc);
            for (int q = 0; q < N; q++) out[b * N + q] = t - 2 * acc[q];
        }
        return;
    }
    for (int64_t b = 0; b < B; b++) { /* few large states: threads split each one's blocks */
        double acc[64] = {0}, t = 0;
        const REAL *a = psi + 2 * (b << N);
        OMP_ITEMS_ACC(acc, 64, t)
        for (int64_t k = 0; k < nb; k += 16) t += FN(sv_ez_blocks)(a, N, K, k, k + 16 < nb ? k + 16 : nb, acc);
        for (int q = 0; q < N; q++) out[b * N + q] = t - 2 * acc[q];
    }
}

HPR_KERNEL void FN(hpr_sv_probabilities)(REAL *out, const REAL *psi, int64_t B, int N, int nthreads) {
    int64_t n = B << N, nc = (n + SV_CHUNK - 1) / SV_CHUNK;
    int par = nthreads > 1 && n >= HPR_SV_OMP_MIN;
    (void)par;
    OMP_ITEMS
    for (int64_t c = 0; c < nc; c++) {
        int64_t i0 = c * SV_CHUNK, i1 = i0 + SV_CHUNK < n ? i0 + SV_CHUNK : n;
        SIMD
        for (int64_t i = i0; i < i1; i++) out[i] = psi[2 * i] * psi[2 * i] + psi[2 * i + 1] * psi[2 * i + 1];
    }
}

/* sum over i in [i0, i1) of conj(a[i ^ x]) (-1)^popcount(i & z) a[i], into (*re, *im) */
static inline void FN(sv_pauli_range)(const REAL *a, int64_t i0, int64_t i1, int64_t x, int64_t z,
                                      double *re, double *im) {
    double sr = 0, si = 0;
    SIMD_SUM2(sr, si)
    for (int64_t i = i0; i < i1; i++) {
        int64_t j = i ^ x;
        double sg = 1 - 2 * (__builtin_popcountll((unsigned long long)(i & z)) & 1);
        double pr = a[2 * j], pi = a[2 * j + 1], vr = a[2 * i], vi = a[2 * i + 1];
        sr += sg * (pr * vr + pi * vi);
        si += sg * (pr * vi - pi * vr);
    }
    *re += sr;
    *im += si;
}

HPR_KERNEL void FN(hpr_sv_expval_pauli)(double *out, const REAL *psi, int64_t B, int N, int64_t xmask,
                                        int64_t zmask, int ny, int nthreads) {
    int64_t M = INT64_C(1) << N;
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    if (!par || B >= nthreads) {
        OMP_ITEMS
        for (int64_t b = 0; b < B; b++) {
            double re = 0, im = 0;
            FN(sv_pauli_range)(psi + 2 * (b << N), 0, M, xmask, zmask, &re, &im);
            out[b] = sv_phase_re(ny, re, im);
        }
        return;
    }
    int64_t nc = (M + SV_CHUNK - 1) / SV_CHUNK;
    for (int64_t b = 0; b < B; b++) {
        double re = 0, im = 0;
        const REAL *a = psi + 2 * (b << N);
        OMP_ITEMS_SUM2(re, im)
        for (int64_t c = 0; c < nc; c++)
            FN(sv_pauli_range)(a, c * SV_CHUNK, (c + 1) * SV_CHUNK < M ? (c + 1) * SV_CHUNK : M, xmask, zmask,
                               &re, &im);
        out[b] = sv_phase_re(ny, re, im);
    }
}


/* sum over i in [i0, i1) of conj(l[i ^ x]) (-1)^popcount(i & z) a[i], into (*re, *im): the overlap form
 * of sv_pauli_range, with two states (the adjoint gradients' <lambda| P |psi>) */
static inline void FN(sv_pauli_overlap_range)(const REAL *l, const REAL *a, int64_t i0, int64_t i1, int64_t x,
                                              int64_t z, double *re, double *im) {
    double sr = 0, si = 0;
    SIMD_SUM2(sr, si)
    for (int64_t i = i0; i < i1; i++) {
        int64_t j = i ^ x;
        double sg = 1 - 2 * (__builtin_popcountll((unsigned long long)(i & z)) & 1);
        double pr = l[2 * j], pi = l[2 * j + 1], vr = a[2 * i], vi = a[2 * i + 1];
        sr += sg * (pr * vr + pi * vi);
        si += sg * (pr * vi - pi * vr);
    }
    *re += sr;
    *im += si;
}

/* out[b] = <lam_b| P |psi_b> as (re, im) pairs, P the Pauli string of (xmask, zmask, ny) */
HPR_KERNEL void FN(hpr_sv_pauli_overlap)(double *out, const REAL *lam, const REAL *psi, int64_t B, int N,
                                         int64_t xmask, int64_t zmask, int ny, int nthreads) {
    int64_t M = INT64_C(1) << N;
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    (void)par;
    OMP_ITEMS
    for (int64_t b = 0; b < B; b++) {
        double re = 0, im = 0;
        FN(sv_pauli_overlap_range)(lam + 2 * (b << N), psi + 2 * (b << N), 0, M, xmask, zmask, &re, &im);
        double pr = sv_phase_re(ny, re, im), pi = sv_phase_re(ny, im, -re);  /* i^ny (re + i im) */
        out[2 * b] = pr;
        out[2 * b + 1] = pi;
    }
}
