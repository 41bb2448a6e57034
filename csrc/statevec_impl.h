/* The body of statevec.c's kernels, written once and included twice: REAL = float with
 * FN(x) = x##_f32, then REAL = double with FN(x) = x##_f64. No include guard on purpose.
 * psi: (B, 2**N) complex as interleaved REALs; amplitude i of state b is psi[2 ((b << N) + i) + {0, 1}].
 * Sums (expectation values) are accumulated in double for both precisions. */

/* x[j], y[j] <- u00 x[j] + u01 y[j], u10 x[j] + u11 y[j] for j < L (x, y runs of L amplitudes) */
SV_INLINE void FN(sv_run_1q)(REAL *restrict x, REAL *restrict y, int64_t L, const REAL *u) {
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

/* the same for a real U (H, RY, X-like): half the arithmetic */
SV_INLINE void FN(sv_run_1q_real)(REAL *restrict x, REAL *restrict y, int64_t L, const REAL *u) {
    const REAL a = u[0], b = u[2], c = u[4], d = u[6];
    SIMD
    for (int64_t j = 0; j < 2 * L; j++) {
        REAL xv = x[j], yv = y[j];
        x[j] = a * xv + b * yv;
        y[j] = c * xv + d * yv;
    }
}

/* x[j] *= d for j < L */
SV_INLINE void FN(sv_run_scale)(REAL *restrict x, int64_t L, REAL dr, REAL di) {
    SIMD
    for (int64_t j = 0; j < L; j++) {
        REAL xr = x[2 * j], xi = x[2 * j + 1];
        x[2 * j] = dr * xr - di * xi;
        x[2 * j + 1] = dr * xi + di * xr;
    }
}

/* exchange runs x[0:L] and y[0:L] of amplitudes */
SV_INLINE void FN(sv_run_swap)(REAL *restrict x, REAL *restrict y, int64_t L) {
    SIMD
    for (int64_t j = 0; j < 2 * L; j++) {
        REAL t = x[j];
        x[j] = y[j];
        y[j] = t;
    }
}

/* 1 where pairs off REALs apart are far (statevec.c, "far pairs"): staged through buffers */
SV_INLINE int FN(sv_is_far)(int64_t off) { return off * (int64_t)sizeof(REAL) >= sv_far_bytes; }

/* exchange far runs x[0:L] and y[0:L]: x -> buffer, y -> x, buffer -> y, each copy streaming one far run */
SV_INLINE void FN(sv_far_swap)(REAL *x, REAL *y, int64_t L) {
    REAL t[2 * SV_FAR_CHUNK];
    for (int64_t s = 0; s < L; s += SV_FAR_CHUNK) {
        const int64_t c = L - s < SV_FAR_CHUNK ? L - s : SV_FAR_CHUNK;
        const size_t nb = (size_t)(2 * c) * sizeof(REAL);
        memcpy(t, x + 2 * s, nb);
        memcpy(x + 2 * s, y + 2 * s, nb);
        memcpy(y + 2 * s, t, nb);
    }
}

/* the 2x2 U on far runs x[0:L], y[0:L]: per chunk, x -> buffer t, then x <- u00 t + u01 y (reading y's
 * chunk into cache) and y <- u10 t + u11 y (y's chunk now in cache). Staging y as well (both copies
 * first, then the two loops) measured no faster here, so y is read in place. */
SV_INLINE void FN(sv_far_1q)(REAL *x, REAL *y, int64_t L, const REAL *u) {
    REAL t[2 * SV_FAR_CHUNK];
    const REAL ar = u[0], ai = u[1], br = u[2], bi = u[3], cr = u[4], ci = u[5], dr = u[6], di = u[7];
    for (int64_t s = 0; s < L; s += SV_FAR_CHUNK) {
        const int64_t c = L - s < SV_FAR_CHUNK ? L - s : SV_FAR_CHUNK;
        REAL *restrict fx = x + 2 * s, *restrict fy = y + 2 * s;
        memcpy(t, fx, (size_t)(2 * c) * sizeof(REAL));
        SIMD
        for (int64_t j = 0; j < c; j++) {
            REAL xr = t[2 * j], xi = t[2 * j + 1], yr = fy[2 * j], yi = fy[2 * j + 1];
            fx[2 * j] = ar * xr - ai * xi + br * yr - bi * yi;
            fx[2 * j + 1] = ar * xi + ai * xr + br * yi + bi * yr;
        }
        SIMD
        for (int64_t j = 0; j < c; j++) {
            REAL xr = t[2 * j], xi = t[2 * j + 1], yr = fy[2 * j], yi = fy[2 * j + 1];
            fy[2 * j] = cr * xr - ci * xi + dr * yr - di * yi;
            fy[2 * j + 1] = cr * xi + ci * xr + dr * yi + di * yr;
        }
    }
}

/* sv_far_1q for a real U (H, RY, X-like): the same two passes, re and im taking the same coefficients */
SV_INLINE void FN(sv_far_1q_real)(REAL *x, REAL *y, int64_t L, const REAL *u) {
    REAL t[2 * SV_FAR_CHUNK];
    const REAL a = u[0], b = u[2], c = u[4], d = u[6];
    for (int64_t s = 0; s < L; s += SV_FAR_CHUNK) {
        const int64_t n = 2 * (L - s < SV_FAR_CHUNK ? L - s : SV_FAR_CHUNK); /* REALs in the chunk */
        REAL *restrict fx = x + 2 * s, *restrict fy = y + 2 * s;
        memcpy(t, fx, (size_t)n * sizeof(REAL));
        SIMD
        for (int64_t j = 0; j < n; j++) fx[j] = a * t[j] + b * fy[j];
        SIMD
        for (int64_t j = 0; j < n; j++) fy[j] = c * t[j] + d * fy[j];
    }
}

/* CNOT with the low control c < 3 on runs x, y of L amplitudes (x's first aligned to 8): in each block of
 * 2**(c+1) amplitudes the upper 2**c (control 1) are exchanged; REAL r is there when bit c+1 of r is set */
SV_INLINE void FN(sv_run_select_low)(REAL *restrict x, REAL *restrict y, int64_t L, int c) {
    SIMD
    for (int64_t r = 0; r < 2 * L; r++) {
        int up = (int)((r >> (c + 1)) & 1);
        REAL xv = x[r], yv = y[r];
        x[r] = up ? yv : xv;
        y[r] = up ? xv : yv;
    }
}

/* CNOT with control 2 on runs x, y of L amplitudes (x's first aligned to 8) in complex128: the upper 4 of
 * every 8 amplitudes, one 64-byte line (states are 64-byte aligned), are exchanged; the control-0 lines are
 * never touched (half the memory traffic of sv_run_select_low) */
SV_INLINE void FN(sv_run_swap_c2)(REAL *restrict x, REAL *restrict y, int64_t L) {
    for (int64_t k = 8; k < 2 * L; k += 16) {
        SIMD
        for (int j = 0; j < 8; j++) {
            REAL t = x[k + j];
            x[k + j] = y[k + j];
            y[k + j] = t;
        }
    }
}

/* X on runs x, y of L amplitudes where the controls hold: amplitude j of x has index i0 + j (in its state
 * after & M1) */
SV_INLINE void FN(sv_run_select)(REAL *restrict x, REAL *restrict y, int64_t L, int64_t i0, int64_t M1,
                                     int64_t cmask) {
    SIMD
    for (int64_t j = 0; j < L; j++) {
        int on = (((i0 + j) & M1) & cmask) == cmask;
        REAL xr = x[2 * j], xi = x[2 * j + 1], yr = y[2 * j], yi = y[2 * j + 1];
        x[2 * j] = on ? yr : xr; x[2 * j + 1] = on ? yi : xi;
        y[2 * j] = on ? xr : yr; y[2 * j + 1] = on ? xi : yi;
    }
}

/* (x, y) <- (a x + b y, c x + d y) for a real U on low qubit Q (1 or 2, a compile-time constant after
 * inlining) over n amplitudes: blocks of 2**(Q+1) amplitudes, x the lower half, y the upper */
SV_INLINE void FN(sv_low_real)(REAL *psi, int64_t n, const REAL *U, const int Q) {
    const REAL a = U[0], b = U[2], c = U[4], d = U[6];
    const int64_t H = INT64_C(2) << Q; /* REALs in a half block */
    for (int64_t k = 0; k < 2 * n; k += 2 * H) {
        REAL *x = psi + k, *y = x + H;
        SIMD
        for (int64_t j = 0; j < H; j++) {
            REAL xv = x[j], yv = y[j];
            x[j] = a * xv + b * yv;
            y[j] = c * xv + d * yv;
        }
    }
}

/* (x, y) <- (a x + b y, c x + d y) on L adjacent amplitude pairs (qubit 0), u the complex 2x2. With
 * vector extensions, a pair v = (xr, xi, yr, yi) is one vector and the product is
 * A0 v + A1 swap(v) + B0 w + B1 swap(w), w = (yr, yi, xr, xi), since (p + i q)(r + i s) = p (r, s) + q (-s, r):
 * measured ~20% faster than the scalar form on a state in cache (AVX2 and AVX-512 alike). */
SV_INLINE void FN(sv_q0_pairs)(REAL *restrict x, int64_t L, const REAL *u) {
#if HPR_SV_VECTOR_EXT
    typedef FN(sv_v4) v4;
    typedef FN(sv_v4i) v4i;
    const v4 A0 = {u[0], u[0], u[6], u[6]}, A1 = {-u[1], u[1], -u[7], u[7]};
    const v4 B0 = {u[2], u[2], u[4], u[4]}, B1 = {-u[3], u[3], -u[5], u[5]};
    for (int64_t j = 0; j < L; j++) {
        v4 v;
        memcpy(&v, x + 4 * j, sizeof v);
        v4 vs = __builtin_shuffle(v, (v4i){1, 0, 3, 2}), w = __builtin_shuffle(v, (v4i){2, 3, 0, 1});
        v4 ws = __builtin_shuffle(v, (v4i){3, 2, 1, 0});
        v4 o = A0 * v + A1 * vs + B0 * w + B1 * ws;
        memcpy(x + 4 * j, &o, sizeof o);
    }
#else
    const REAL ar = u[0], ai = u[1], br = u[2], bi = u[3], cr = u[4], ci = u[5], dr = u[6], di = u[7];
    SIMD
    for (int64_t j = 0; j < L; j++) {
        REAL *s = x + 4 * j;
        REAL xr = s[0], xi = s[1], yr = s[2], yi = s[3];
        s[0] = ar * xr - ai * xi + br * yr - bi * yi;
        s[1] = ar * xi + ai * xr + br * yi + bi * yr;
        s[2] = cr * xr - ci * xi + dr * yr - di * yi;
        s[3] = cr * xi + ci * xr + dr * yi + di * yr;
    }
#endif
}

/* Qubit Q = 1 or 2 (a compile-time constant after inlining) over n amplitudes (whole blocks of
 * 2**(Q+1), x the lower half of a block, y the upper): runs of 2 or 4 amplitudes would each cost a
 * run set-up in the general walk, so these walk the blocks with loops of constant length. */
SV_INLINE void FN(sv_low_1q)(REAL *psi, int64_t n, const REAL *u, const int Q) {
    const REAL ar = u[0], ai = u[1], br = u[2], bi = u[3], cr = u[4], ci = u[5], dr = u[6], di = u[7];
    const int64_t H = INT64_C(1) << Q; /* amplitudes in a half block */
    for (int64_t k = 0; k < 2 * n; k += 4 * H) {
        REAL *x = psi + k, *y = x + 2 * H;
        SIMD
        for (int64_t j = 0; j < H; j++) {
            REAL xr = x[2 * j], xi = x[2 * j + 1], yr = y[2 * j], yi = y[2 * j + 1];
            x[2 * j] = ar * xr - ai * xi + br * yr - bi * yi;
            x[2 * j + 1] = ar * xi + ai * xr + br * yi + bi * yr;
            y[2 * j] = cr * xr - ci * xi + dr * yr - di * yi;
            y[2 * j + 1] = cr * xi + ci * xr + dr * yi + di * yr;
        }
    }
}

/* amplitude *= d[bit Q] for Q = 1 to 4 over n amplitudes; a half whose entry is exactly 1 is left alone */
SV_INLINE void FN(sv_low_diag)(REAL *psi, int64_t n, const REAL *d, const int Q) {
    const int64_t H = INT64_C(1) << Q;
    const REAL d0r = d[0], d0i = d[1], d1r = d[2], d1i = d[3];
    const int one0 = d0r == 1 && d0i == 0, one1 = d1r == 1 && d1i == 0;
    if (!one0 && !one1) { /* both halves in one pass over the blocks */
        for (int64_t k = 0; k < 2 * n; k += 4 * H) {
            REAL *x = psi + k, *y = x + 2 * H;
            SIMD
            for (int64_t j = 0; j < H; j++) {
                REAL xr = x[2 * j], xi = x[2 * j + 1], yr = y[2 * j], yi = y[2 * j + 1];
                x[2 * j] = d0r * xr - d0i * xi;
                x[2 * j + 1] = d0r * xi + d0i * xr;
                y[2 * j] = d1r * yr - d1i * yi;
                y[2 * j + 1] = d1r * yi + d1i * yr;
            }
        }
        return;
    }
    for (int h = 0; h < 2; h++) { /* one half only (Z, S, T, phase: the other entry is 1) */
        const REAL er = d[2 * h], ei = d[2 * h + 1];
        if (er == 1 && ei == 0) continue;
        for (int64_t k = 2 * h * H; k < 2 * n; k += 4 * H) {
            REAL *x = psi + k;
            SIMD
            for (int64_t j = 0; j < H; j++) {
                REAL xr = x[2 * j], xi = x[2 * j + 1];
                x[2 * j] = er * xr - ei * xi;
                x[2 * j + 1] = er * xi + ei * xr;
            }
        }
    }
}

/* X on qubit Q = 0, 1 or 2 over n amplitudes: the halves of every block exchanged */
SV_INLINE void FN(sv_low_swap)(REAL *psi, int64_t n, const int Q) {
    const int64_t H = INT64_C(2) << Q; /* REALs in a half block */
    for (int64_t k = 0; k < 2 * n; k += 2 * H) {
        REAL *x = psi + k, *y = x + H;
        SIMD
        for (int64_t j = 0; j < H; j++) {
            REAL t = x[j];
            x[j] = y[j];
            y[j] = t;
        }
    }
}

/* the low-qubit kernels over a batch: work items of SV_LOW_ITEM amplitudes (whole blocks, never across
 * two states), state b's parameters at P + b * stride; the items split over the threads */
#define SV_LOW_ITEM 4096
#define SV_LOW_ITEMS(...)                                                                          \
    do {                                                                                           \
        const int64_t M_ = INT64_C(1) << N, it_ = M_ < SV_LOW_ITEM ? M_ : SV_LOW_ITEM;             \
        const int64_t per_ = M_ / it_;                                                             \
        OMP_ITEMS                                                                                  \
        for (int64_t w = 0; w < B * per_; w++) {                                                   \
            const int64_t b = w / per_;                                                            \
            REAL *x0 = psi + 2 * w * it_;                                                          \
            const int64_t len = it_;                                                               \
            (void)b;                                                                               \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    } while (0)

/* X on target t < 3 where the single control c < 3 is 1, over n amplitudes: in every block of 8
 * amplitudes the same fixed permutation (a table of 8) */
SV_INLINE void FN(sv_low_x_tc)(REAL *psi, int64_t n, const int t, const int c) {
    for (int64_t k = 0; k < 2 * n; k += 16) {
        REAL *v = psi + k;
        for (int i = 0; i < 8; i++) /* constant t, c: the loop unrolls into the block's few swaps */
            if (((i >> c) & 1) && !((i >> t) & 1)) {
                const int j = i | (1 << t);
                REAL r = v[2 * i], m = v[2 * i + 1];
                v[2 * i] = v[2 * j];
                v[2 * i + 1] = v[2 * j + 1];
                v[2 * j] = r;
                v[2 * j + 1] = m;
            }
    }
}

SV_INLINE void FN(sv_low_x)(REAL *psi, int64_t n, int t, int c) {
    switch (3 * t + c) { /* t != c, both < 3: six cases, each with constants */
    case 1: FN(sv_low_x_tc)(psi, n, 0, 1); break;
    case 2: FN(sv_low_x_tc)(psi, n, 0, 2); break;
    case 3: FN(sv_low_x_tc)(psi, n, 1, 0); break;
    case 5: FN(sv_low_x_tc)(psi, n, 1, 2); break;
    case 6: FN(sv_low_x_tc)(psi, n, 2, 0); break;
    default: FN(sv_low_x_tc)(psi, n, 2, 1); break;
    }
}

HPR_KERNEL void FN(hpr_sv_apply_1q)(REAL *psi, int64_t B, int N, int q, int64_t cmask, const REAL *U,
                                    int64_t ustride, int nthreads) {
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    (void)par;
    if (cmask == 0 && (q == 1 || q == 2) && U[1] == 0 && U[3] == 0 && U[5] == 0 && U[7] == 0 && ustride == 0) {
        /* a real U on qubit 1 or 2: runs of 2 or 4 amplitudes would cost a run set-up each; walk blocks of
         * 2**(q+1) amplitudes with loops of constant length instead (re and im take the same coefficients) */
        if (q == 1) FN(sv_low_real)(psi, B << N, U, 1);
        else FN(sv_low_real)(psi, B << N, U, 2);
        (void)par;
        return;
    }
    if (cmask == 0 && (q == 1 || q == 2)) { /* any U (one per state too) on qubit 1 or 2: block walk */
        SV_LOW_ITEMS({
            if (q == 1) FN(sv_low_1q)(x0, len, U + b * ustride, 1);
            else FN(sv_low_1q)(x0, len, U + b * ustride, 2);
        });
        return;
    }
    if (cmask == 0 && q == 0 && U[1] == 0 && U[3] == 0 && U[5] == 0 && U[7] == 0 && ustride == 0) {
        const REAL ua = U[0], ub = U[2], uc = U[4], ud = U[6];
        SV_PAIRS_Q0({
            (void)b;
            SIMD
            for (int64_t j = 0; j < Lc; j++) {
                REAL *s = x + 4 * j;
                REAL xr = s[0], xi = s[1], yr = s[2], yi = s[3];
                s[0] = ua * xr + ub * yr;
                s[1] = ua * xi + ub * yi;
                s[2] = uc * xr + ud * yr;
                s[3] = uc * xi + ud * yi;
            }
        });
        return;
    }
    if (cmask == 0 && q == 0) {
        SV_PAIRS_Q0({ FN(sv_q0_pairs)(x, Lc, U + b * ustride); });
        return;
    }
    sv_plan p;
    sv_plan_make(&p, B, N, cmask | (INT64_C(1) << q));
    int64_t off = 2 * (INT64_C(1) << q); /* REALs from the bit-0 to the bit-1 amplitude */
    /* far pairs staged in both precisions (complex64 at n = 26, qubit 25: 49 ms direct, 45-46 staged; the
     * ~15% loss measured before was the staged code run out of line, as baseline SSE2); short runs: as for X */
    const int far = FN(sv_is_far)(off) && p.Lr >= 64;
    OMP_ITEMS
    for (int64_t w = 0; w < p.W; w++) {
        const REAL *u = U + (w / p.per) * ustride;
        const int real = u[1] == 0 && u[3] == 0 && u[5] == 0 && u[7] == 0;
        if (far && real) {
            SV_RUNS(p, w, cmask, FN(sv_far_1q_real)(x, x + off, p.Lr, u);)
        } else if (far) {
            SV_RUNS(p, w, cmask, FN(sv_far_1q)(x, x + off, p.Lr, u);)
        } else if (real) {
            SV_RUNS(p, w, cmask, FN(sv_run_1q_real)(x, x + off, p.Lr, u);)
        } else {
            SV_RUNS(p, w, cmask, FN(sv_run_1q)(x, x + off, p.Lr, u);)
        }
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

/* amplitude *= (er, ei) over the SV_CHUNK amplitudes at x; a real factor scales the REALs by one
 * number (Z, RZ(pi)), a factor exactly 1 is skipped */
SV_INLINE void FN(sv_chunk_scale)(REAL *restrict x, REAL er, REAL ei) {
    if (ei == 0) {
        if (er == 1) return;
        SIMD
        for (int64_t j = 0; j < 2 * SV_CHUNK; j++) x[j] *= er;
    } else {
        FN(sv_run_scale)(x, SV_CHUNK, er, ei);
    }
}

/* exchange the SV_CHUNK amplitudes at x and y (a vectorised block swap) */
SV_INLINE void FN(sv_chunk_swap)(REAL *restrict x, REAL *restrict y) {
    SIMD
    for (int64_t j = 0; j < 2 * SV_CHUNK; j++) {
        REAL t = x[j];
        x[j] = y[j];
        y[j] = t;
    }
}

HPR_KERNEL void FN(hpr_sv_apply_diag_1q)(REAL *psi, int64_t B, int N, int q, const REAL *d,
                                         int64_t dstride, int nthreads) {
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    (void)par;
    if (q >= 1 && q <= 4) { /* runs of 2 to 16 amplitudes: walk the blocks instead */
        SV_LOW_ITEMS({
            const REAL *e = d + b * dstride;
            switch (q) {
            case 1: FN(sv_low_diag)(x0, len, e, 1); break;
            case 2: FN(sv_low_diag)(x0, len, e, 2); break;
            case 3: FN(sv_low_diag)(x0, len, e, 3); break;
            default: FN(sv_low_diag)(x0, len, e, 4); break;
            }
        });
        return;
    }
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
    if ((INT64_C(1) << q) >= SV_CHUNK) {
        /* a high qubit: each half of each block of 2**(q+1) amplitudes is one contiguous run, so the batch
         * is walked in address order as items of SV_CHUNK amplitudes, each inside one half of one state:
         * no index arithmetic inside a run, one streaming pass per half. Flat item w starts at amplitude
         * i0 = w * SV_CHUNK; its half is bit q of i0, its state i0 >> N. Where every state's entry of one
         * half is exactly 1 (Z, S, T, phase) only the other half h's items are enumerated: item k of that
         * half lies in half-block k / per (per = 2**q / SV_CHUNK items each): w = (2 (k / per) + h) per + k % per. */
        const int64_t per = (INT64_C(1) << q) / SV_CHUNK, W = (B << N) / SV_CHUNK;
        const int h = dstride != 0 ? -1 : (d[0] == 1 && d[1] == 0) ? 1 : (d[2] == 1 && d[3] == 0) ? 0 : -1;
        const int64_t nw = h < 0 ? W : W / 2;
        OMP_ITEMS
        for (int64_t k = 0; k < nw; k++) {
            const int64_t w = h < 0 ? k : (2 * (k / per) + h) * per + k % per, i0 = w * SV_CHUNK;
            const REAL *e = d + (i0 >> N) * dstride + 2 * ((i0 >> q) & 1);
            FN(sv_chunk_scale)(psi + 2 * i0, e[0], e[1]);
        }
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
    if (cmask == 0 && (q == 1 || q == 2)) {
        SV_LOW_ITEMS({
            if (q == 1) FN(sv_low_swap)(x0, len, 1);
            else FN(sv_low_swap)(x0, len, 2);
        });
        return;
    }
    const int64_t lowc = cmask ? __builtin_ctzll((unsigned long long)cmask) : 64, M1 = (INT64_C(1) << N) - 1;
    if (cmask == (INT64_C(1) << lowc) && lowc < 3 && q < 3 && N >= 3 && !par) { /* target and control both
        * among the 3 low qubits: the same permutation in every block of 8 amplitudes */
        FN(sv_low_x)(psi, B << N, q, (int)lowc);
        return;
    }
    if (cmask && q <= 2 && lowc >= 3) { /* controls all above the target's block: the runs where every
        * control is 1 are >= 8 contiguous amplitudes, whole blocks of qubit q: X inside them only (the other
        * amplitudes are not touched, as a CNOT with a high control reads half the state) */
        sv_plan p;
        sv_plan_make(&p, B, N, cmask);
        OMP_ITEMS
        for (int64_t w = 0; w < p.W; w++) {
            SV_RUNS(p, w, cmask, {
                if (q == 0) FN(sv_low_swap)(x, p.Lr, 0);
                else if (q == 1) FN(sv_low_swap)(x, p.Lr, 1);
                else FN(sv_low_swap)(x, p.Lr, 2);
            })
        }
        return;
    }
    if (cmask && q == 0) { /* adjacent pairs, swapped where the controls hold: a select, not runs of one */
        SV_PAIRS_Q0({
            const int64_t i0 = (x - psi) / 2;
            (void)b;
            SIMD
            for (int64_t j = 0; j < Lc; j++) {
                REAL *s = x + 4 * j;
                int on = (((i0 + 2 * j) & M1) & cmask) == cmask;
                REAL xr = s[0], xi = s[1], yr = s[2], yi = s[3];
                s[0] = on ? yr : xr; s[1] = on ? yi : xi;
                s[2] = on ? xr : yr; s[3] = on ? xi : yi;
            }
        });
        return;
    }
    sv_plan p;
    int64_t off = 2 * (INT64_C(1) << q);
    const int far = FN(sv_is_far)(off);
    if (cmask == (INT64_C(1) << lowc) && lowc < 3 && q >= 3) { /* CNOT with a low control: in the target's
        * long runs (aligned to 8 amplitudes), swap the upper 2**c of every 2**(c+1) amplitudes */
        sv_plan_make(&p, B, N, INT64_C(1) << q);
        /* far pairs with control 2 in complex128: the control-1 amplitudes are whole lines, swapped in place
         * (n = 25, target 24: 40 ms staged, 30 direct by lines; Lightning 34); nearer pairs stream every line
         * (by lines, skipping every other one, measured 19 -> 29 ms for target 23: the prefetchers lose) */
        const int lines = far && lowc == 2 && sizeof(REAL) == 8;
        OMP_ITEMS
        for (int64_t w = 0; w < p.W; w++) {
            SV_RUNS(p, w, 0, {
                if (lines) FN(sv_run_swap_c2)(x, x + off, p.Lr);
                else if (far) SV_FAR_STAGED(x, x + off, p.Lr, FN(sv_run_select_low)(bx, by, L_, (int)lowc););
                else FN(sv_run_select_low)(x, x + off, p.Lr, (int)lowc);
            })
        }
        return;
    }
    if (cmask && lowc < 3) { /* a low control would cut the runs to 1..4 amplitudes: walk the target's
                              * long runs and select where the controls hold */
        sv_plan_make(&p, B, N, INT64_C(1) << q);
        OMP_ITEMS
        for (int64_t w = 0; w < p.W; w++) {
            SV_RUNS(p, w, 0, {
                const int64_t i0 = (x - psi) / 2;
                if (far) SV_FAR_STAGED(x, x + off, p.Lr, FN(sv_run_select)(bx, by, L_, i0 + s_, M1, cmask););
                else FN(sv_run_select)(x, x + off, p.Lr, i0, M1, cmask);
            })
        }
        return;
    }
    sv_plan_make(&p, B, N, cmask | (INT64_C(1) << q));
    if (cmask && (INT64_C(1) << p.pos[0]) >= SV_CHUNK) {
        /* target and controls all high (CNOT, Toffoli on the top qubits): the amplitudes to exchange are
         * whole contiguous items of SV_CHUNK amplitudes, the item at (controls 1, target 0) with the one
         * 2**q amplitudes above it. The 2**(N-m) / SV_CHUNK such items of a state (m = the qubits of
         * cmask | q) are enumerated directly: item k's first amplitude is k * SV_CHUNK with a zero bit
         * inserted at each of those positions (once per item), OR cmask; each pair one block swap. */
        const int64_t per = (INT64_C(1) << (N - p.m)) / SV_CHUNK;
        OMP_ITEMS
        for (int64_t k = 0; k < B * per; k++) {
            const int64_t b = k / per;
            REAL *x = psi + 2 * ((b << N) + (sv_insert((k - b * per) * SV_CHUNK, p.pos, p.m) | cmask));
            if (far) FN(sv_far_swap)(x, x + off, SV_CHUNK);
            else FN(sv_chunk_swap)(x, x + off);
        }
        return;
    }
    const int far_runs = far && p.Lr >= 64; /* runs of a few amplitudes (a control on qubits 3..5): a copy
                                              * per run cost more than it saved (measured) */
    OMP_ITEMS
    for (int64_t w = 0; w < p.W; w++) {
        if (far_runs) SV_RUNS(p, w, cmask, FN(sv_far_swap)(x, x + off, p.Lr);)
        else SV_RUNS(p, w, cmask, FN(sv_run_swap)(x, x + off, p.Lr);)
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
SV_INLINE double FN(sv_ez_blocks)(const REAL *a, int N, int K, int64_t k0, int64_t k1, double *acc) {
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

/* sum over i in [i0, i1) of conj(l[i ^ x]) (-1)^popcount(i & z) a[i], into (*re, *im): <l| P |a> up to
 * P's phase; l = a gives the expectation, two states the adjoint gradients' <lambda| P |psi> */
SV_INLINE void FN(sv_pauli_overlap_range)(const REAL *l, const REAL *a, int64_t i0, int64_t i1, int64_t x,
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

HPR_KERNEL void FN(hpr_sv_expval_pauli)(double *out, const REAL *psi, int64_t B, int N, int64_t xmask,
                                        int64_t zmask, int ny, int nthreads) {
    int64_t M = INT64_C(1) << N;
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    if (!par || B >= nthreads) {
        OMP_ITEMS
        for (int64_t b = 0; b < B; b++) {
            double re = 0, im = 0;
            FN(sv_pauli_overlap_range)(psi + 2 * (b << N), psi + 2 * (b << N), 0, M, xmask, zmask, &re, &im);
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
            FN(sv_pauli_overlap_range)(a, a, c * SV_CHUNK, (c + 1) * SV_CHUNK < M ? (c + 1) * SV_CHUNK : M, xmask,
                                       zmask, &re, &im);
        out[b] = sv_phase_re(ny, re, im);
    }
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

/* ---- dense k-qubit blocks (fused runs of gates) and compiled programs ------------------------- */

/* ---- one small state, one thread (compiled programs over many small circuits) ------------- */

/* (x, y) <- (u00 x + u01 y, u10 x + u11 y) for the pairs of qubit q where the qubits of cmask are 1 */
SV_INLINE void FN(sv1_1q)(REAL *a, int N, int q, int64_t cmask, const REAL *u) {
    const REAL ar = u[0], ai = u[1], br = u[2], bi = u[3], cr = u[4], ci = u[5], dr = u[6], di = u[7];
    if (cmask) {
        SV1_PAIRS(N, q, SV1_NORED, {
            int on = (i & cmask) == cmask;
            REAL *x = a + 2 * i, *y = a + 2 * (i + h);
            REAL xr = x[0], xi = x[1], yr = y[0], yi = y[1];
            REAL ur = ar * xr - ai * xi + br * yr - bi * yi, ui = ar * xi + ai * xr + br * yi + bi * yr;
            REAL vr = cr * xr - ci * xi + dr * yr - di * yi, vi = cr * xi + ci * xr + dr * yi + di * yr;
            x[0] = on ? ur : xr; x[1] = on ? ui : xi;
            y[0] = on ? vr : yr; y[1] = on ? vi : yi;
        });
        return;
    }
    SV1_PAIRS(N, q, SV1_NORED, {
        REAL *x = a + 2 * i, *y = a + 2 * (i + h);
        REAL xr = x[0], xi = x[1], yr = y[0], yi = y[1];
        x[0] = ar * xr - ai * xi + br * yr - bi * yi;
        x[1] = ar * xi + ai * xr + br * yi + bi * yr;
        y[0] = cr * xr - ci * xi + dr * yr - di * yi;
        y[1] = cr * xi + ci * xr + dr * yi + di * yr;
    });
}

/* (x, y) <- (c x - s y, s x + c y): RY, a real rotation, half the arithmetic of sv1_1q */
SV_INLINE void FN(sv1_ry)(REAL *a, int N, int q, REAL c, REAL s) {
    SV1_PAIRS(N, q, SV1_NORED, {
        REAL *x = a + 2 * i, *y = a + 2 * (i + h);
        REAL xr = x[0], xi = x[1], yr = y[0], yi = y[1];
        x[0] = c * xr - s * yr; x[1] = c * xi - s * yi;
        y[0] = s * xr + c * yr; y[1] = s * xi + c * yi;
    });
}

/* a[i] *= d[bit q of i] (m = 1) or d[b(q) + 2 b(q2)] (m = 2), walked as the pairs of qubit q */
SV_INLINE void FN(sv1_diag)(REAL *a, int N, int q, int q2, int m, const REAL *d) {
    const REAL d0r = d[0], d0i = d[1], d1r = d[2], d1i = d[3];
    const REAL d2r = m == 2 ? d[4] : d0r, d2i = m == 2 ? d[5] : d0i, d3r = m == 2 ? d[6] : d1r,
               d3i = m == 2 ? d[7] : d1i;
    const int64_t b2 = m == 2 ? INT64_C(1) << q2 : 0;
    SV1_PAIRS(N, q, SV1_NORED, {
        int hi = (i & b2) != 0;
        REAL er = hi ? d2r : d0r, ei = hi ? d2i : d0i, fr = hi ? d3r : d1r, fi = hi ? d3i : d1i;
        REAL *x = a + 2 * i, *y = a + 2 * (i + h);
        REAL xr = x[0], xi = x[1], yr = y[0], yi = y[1];
        x[0] = er * xr - ei * xi; x[1] = er * xi + ei * xr;
        y[0] = fr * yr - fi * yi; y[1] = fr * yi + fi * yr;
    });
}

/* X on q where the qubits of cmask are 1 (every pair is rewritten: a select, no branch) */
SV_INLINE void FN(sv1_x)(REAL *a, int N, int q, int64_t cmask) {
    SV1_PAIRS(N, q, SV1_NORED, {
        int on = (i & cmask) == cmask;
        REAL *x = a + 2 * i, *y = a + 2 * (i + h);
        REAL xr = x[0], xi = x[1], yr = y[0], yi = y[1];
        x[0] = on ? yr : xr; x[1] = on ? yi : xi;
        y[0] = on ? xr : yr; y[1] = on ? xi : yi;
    });
}

/* The adjoint step of a rotation exp(-i theta G / 2) on one small state: returns Im <lam| G |psi>
 * and undoes the rotation on psi and lam, in one pass over the pairs (RX, RY) or amplitudes (RZ, RZZ).
 * (c, s) = (cos, sin)(theta / 2). */
SV_INLINE double FN(sv1_rot_adjoint)(REAL *psi, REAL *lam, int N, const int64_t *op, double c_, double s_) {
    const REAL c = (REAL)c_, s = (REAL)s_;
    double acc = 0;
    int q = (int)op[1];
    if (op[0] == SV_OP_RY) { /* Im<l|Y|x> = Re(l1* x0) - Re(l0* x1); RY(-t) = [[c, s], [-s, c]] */
        SV1_PAIRS(N, q, reduction(+ : acc), {
            REAL *x = psi + 2 * i, *y = psi + 2 * (i + h), *l = lam + 2 * i, *m = lam + 2 * (i + h);
            REAL xr = x[0], xi = x[1], yr = y[0], yi = y[1], lr = l[0], li = l[1], mr = m[0], mi = m[1];
            acc += (double)(mr * xr + mi * xi) - (double)(lr * yr + li * yi);
            x[0] = c * xr + s * yr; x[1] = c * xi + s * yi; y[0] = c * yr - s * xr; y[1] = c * yi - s * xi;
            l[0] = c * lr + s * mr; l[1] = c * li + s * mi; m[0] = c * mr - s * lr; m[1] = c * mi - s * li;
        });
    } else if (op[0] == SV_OP_RX) { /* Im<l|X|x> = Im(l0* x1) + Im(l1* x0); RX(-t) = [[c, i s], [i s, c]] */
        SV1_PAIRS(N, q, reduction(+ : acc), {
            REAL *x = psi + 2 * i, *y = psi + 2 * (i + h), *l = lam + 2 * i, *m = lam + 2 * (i + h);
            REAL xr = x[0], xi = x[1], yr = y[0], yi = y[1], lr = l[0], li = l[1], mr = m[0], mi = m[1];
            acc += (double)(lr * yi - li * yr) + (double)(mr * xi - mi * xr);
            x[0] = c * xr - s * yi; x[1] = c * xi + s * yr; y[0] = c * yr - s * xi; y[1] = c * yi + s * xr;
            l[0] = c * lr - s * mi; l[1] = c * li + s * mr; m[0] = c * mr - s * li; m[1] = c * mi + s * lr;
        });
    } else { /* RZ, RZZ: G = z = +-1 (bit q, times the sign of bit q2 for RZZ); Im<l|G|x> = sum z Im(l* x);
              * undo: times e^{+i z t/2} = c + i z s */
        const int64_t b2 = op[0] == SV_OP_RZZ ? INT64_C(1) << op[2] : 0;
        SV1_PAIRS(N, q, reduction(+ : acc), {
            REAL z = (i & b2) ? -1 : 1, sz = z * s;
            REAL *x = psi + 2 * i, *y = psi + 2 * (i + h), *l = lam + 2 * i, *m = lam + 2 * (i + h);
            REAL xr = x[0], xi = x[1], yr = y[0], yi = y[1], lr = l[0], li = l[1], mr = m[0], mi = m[1];
            acc += (double)(z * ((lr * xi - li * xr) - (mr * yi - mi * yr)));
            x[0] = c * xr - sz * xi; x[1] = c * xi + sz * xr; y[0] = c * yr + sz * yi; y[1] = c * yi - sz * yr;
            l[0] = c * lr - sz * li; l[1] = c * li + sz * lr; m[0] = c * mr + sz * mi; m[1] = c * mi - sz * mr;
        });
    }
    return acc;
}

/* KQ_T groups of a k-qubit dense block (K a compile-time constant after inlining): the groups'
 * amplitudes are gathered into split re/im tiles, multiplied by U with the KQ_T groups as the vector
 * lanes, and scattered back. base: each group's first amplitude (in REALs); nt <= KQ_T groups are real,
 * the rest of the tile repeats group 0 and is not stored. */
SV_INLINE void FN(sv_kq_tile)(REAL *psi, const int64_t *base, int nt, const int64_t *off, const REAL *U,
                              const int K) {
    const int D = 1 << K;
    REAL xr[32][KQ_T], xi[32][KQ_T];
    for (int c = 0; c < D; c++)
        for (int t = 0; t < KQ_T; t++) {
            const REAL *v = psi + base[t < nt ? t : 0] + off[c];
            xr[c][t] = v[0];
            xi[c][t] = v[1];
        }
    for (int r = 0; r < D; r++) {
        REAL sr[KQ_T] = {0}, si[KQ_T] = {0};
        for (int c = 0; c < D; c++) {
            const REAL ur = U[2 * (r * D + c)], ui = U[2 * (r * D + c) + 1];
            SIMD
            for (int t = 0; t < KQ_T; t++) {
                sr[t] += ur * xr[c][t] - ui * xi[c][t];
                si[t] += ur * xi[c][t] + ui * xr[c][t];
            }
        }
        for (int t = 0; t < nt; t++) {
            REAL *v = psi + base[t] + off[r];
            v[0] = sr[t];
            v[1] = si[t];
        }
    }
}

/* psi <- U on the k = popcount(qmask) qubits of qmask (2 <= k <= 5), the lowest qubit the low bit of
 * U's index; U is 2**k x 2**k, shared by the batch. Arithmetic: 2**k complex multiply-adds per
 * amplitude, so k = 3 costs about one pass over memory on a vector unit, k = 5 several. */
HPR_KERNEL void FN(hpr_sv_apply_kq)(REAL *psi, int64_t B, int N, int64_t qmask, const REAL *U, int nthreads) {
    int par = nthreads > 1 && (B << N) >= HPR_SV_OMP_MIN;
    (void)par;
    int pos[64], K = 0;
    for (int q = 0; q < N; q++)
        if ((qmask >> q) & 1) pos[K++] = q;
    const int D = 1 << K, L = N - K;
    int64_t off[32];
    for (int c = 0; c < D; c++) {
        off[c] = 0;
        for (int t = 0; t < K; t++)
            if ((c >> t) & 1) off[c] += 2 * (INT64_C(1) << pos[t]);
    }
    const int64_t G = B << L, ntiles = (G + KQ_T - 1) / KQ_T;
    OMP_ITEMS
    for (int64_t w = 0; w < ntiles; w++) {
        int64_t base[KQ_T];
        int nt = 0;
        for (int64_t g = w * KQ_T; g < G && nt < KQ_T; g++, nt++) {
            int64_t b = g >> L, loc = g & ((INT64_C(1) << L) - 1);
            base[nt] = 2 * ((b << N) | sv_insert(loc, pos, K));
        }
        switch (K) {
        case 2: FN(sv_kq_tile)(psi, base, nt, off, U, 2); break;
        case 3: FN(sv_kq_tile)(psi, base, nt, off, U, 3); break;
        case 4: FN(sv_kq_tile)(psi, base, nt, off, U, 4); break;
        default: FN(sv_kq_tile)(psi, base, nt, off, U, 5); break;
        }
    }
}

/* the angle of a parameterised op for state b (sign -1: the inverse) */
SV_INLINE double FN(sv_op_angle)(const int64_t *op, const double *fixed, const double *in_b,
                                     const double *w) {
    switch (op[4]) {
    case SV_SRC_INPUT: return in_b[op[5]];
    case SV_SRC_WEIGHT: return w[op[5]];
    default: return fixed[op[5]];
    }
}

/* one op of a program (see statevec.h) on the B states at a; sign -1 applies its inverse (the caller
 * passes the inverses' matrices in mats then) */
SV_INLINE void FN(sv_op_apply)(REAL *a, int64_t B, int N, const int64_t *op, const REAL *mats, const double *fixed,
                            const double *in_b, const double *w, int sign, int nthreads) {
    int q0 = (int)op[1], q1 = (int)op[2];
    const REAL *m = mats + op[6];
    REAL u[8];
    double c, s;
    int small = B == 1 && nthreads == 1 && N <= SV1_SMALL_N;
    if (small) {
        switch (op[0]) {
        case SV_OP_1Q: FN(sv1_1q)(a, N, q0, op[3], m); return;
        case SV_OP_D1: FN(sv1_diag)(a, N, q0, 0, 1, m); return;
        case SV_OP_D2: FN(sv1_diag)(a, N, q0, q1, 2, m); return;
        case SV_OP_X: FN(sv1_x)(a, N, q0, op[3]); return;
        default: break;
        }
    }
    if (op[0] == SV_OP_X && B == 1 && nthreads == 1 && N <= SV1_MAX_N && op[3] && __builtin_ctzll(op[3]) < 3) {
        FN(sv1_x)(a, N, q0, op[3]); /* a low control on one in-cache chunk: sv1_x's select needs no work
                                     * plan, measured ~3% faster here than hpr_sv_apply_x's low paths */
        return;
    }
    switch (op[0]) {
    case SV_OP_1Q: FN(hpr_sv_apply_1q)(a, B, N, q0, op[3], m, 0, nthreads); return;
    case SV_OP_2Q: FN(hpr_sv_apply_2q)(a, B, N, q0, q1, m, 0, nthreads); return;
    case SV_OP_D1: FN(hpr_sv_apply_diag_1q)(a, B, N, q0, m, 0, nthreads); return;
    case SV_OP_D2: FN(hpr_sv_apply_diag_2q)(a, B, N, q0, q1, m, 0, nthreads); return;
    case SV_OP_X: FN(hpr_sv_apply_x)(a, B, N, q0, op[3], nthreads); return;
    case SV_OP_SWAP: FN(hpr_sv_apply_swap)(a, B, N, q0, q1, nthreads); return;
    case SV_OP_KQ: FN(hpr_sv_apply_kq)(a, B, N, op[3], m, nthreads); return;
    default: break;
    }
    double t = 0.5 * sign * FN(sv_op_angle)(op, fixed, in_b, w);
    c = cos(t);
    s = sin(t);
    switch (op[0]) {
    case SV_OP_RX: /* [[c, -i s], [-i s, c]] */
        u[0] = c; u[1] = 0; u[2] = 0; u[3] = -s; u[4] = 0; u[5] = -s; u[6] = c; u[7] = 0;
        if (small) FN(sv1_1q)(a, N, q0, op[3], u);
        else FN(hpr_sv_apply_1q)(a, B, N, q0, op[3], u, 0, nthreads);
        return;
    case SV_OP_RY: /* [[c, -s], [s, c]] */
        u[0] = c; u[1] = 0; u[2] = -s; u[3] = 0; u[4] = s; u[5] = 0; u[6] = c; u[7] = 0;
        if (small && op[3] == 0) FN(sv1_ry)(a, N, q0, (REAL)c, (REAL)s);
        else if (small) FN(sv1_1q)(a, N, q0, op[3], u);
        else FN(hpr_sv_apply_1q)(a, B, N, q0, op[3], u, 0, nthreads);
        return;
    case SV_OP_RZ: /* diag(e^{-it}, e^{it}) */
        u[0] = c; u[1] = -s; u[2] = c; u[3] = s;
        if (small) FN(sv1_diag)(a, N, q0, 0, 1, u);
        else FN(hpr_sv_apply_diag_1q)(a, B, N, q0, u, 0, nthreads);
        return;
    default: /* SV_OP_RZZ: e^{-it} where the parities of q0, q1 agree, e^{it} where they differ */
        u[0] = c; u[1] = -s; u[2] = c; u[3] = s; u[4] = c; u[5] = s; u[6] = c; u[7] = -s;
        if (small) FN(sv1_diag)(a, N, q0, q1, 2, u);
        else FN(hpr_sv_apply_diag_2q)(a, B, N, q0, q1, u, 0, nthreads);
        return;
    }
}

/* one large state: a run of >= 2 consecutive ops on qubits below SV1_MAX_N is applied chunk by chunk
 * (each chunk of 2**SV1_MAX_N amplitudes is a state of its own for them, and stays in cache for the
 * whole run: one pass over memory instead of one per gate); other ops are one pass each, the threads
 * sharing it */
SV_INLINE void FN(sv_run_state)(REAL *a, int N, const int64_t *ops, int64_t nops, const REAL *mats,
                                const double *fixed, const double *in_b, const double *w, int nthreads) {
    const int CB = SV1_MAX_N;
    for (int64_t k = 0; k < nops;) {
        int64_t e = k;
        while (N > CB && e < nops && (sv_op_qubits(ops + SV_OP_WORDS * e) >> CB) == 0) e++;
        if (e - k >= 2) {
            int par = nthreads > 1;
            (void)par;
            OMP_ITEMS
            for (int64_t c = 0; c < (INT64_C(1) << (N - CB)); c++)
                for (int64_t j = k; j < e; j++)
                    FN(sv_op_apply)(a + 2 * (c << CB), 1, CB, ops + SV_OP_WORDS * j, mats, fixed, in_b, w, 1, 1);
            k = e;
        } else {
            FN(sv_op_apply)(a, 1, N, ops + SV_OP_WORDS * k, mats, fixed, in_b, w, 1, nthreads);
            k++;
        }
    }
}

HPR_KERNEL void FN(hpr_sv_run)(REAL *psi, int64_t B, int N, const int64_t *ops, int64_t nops, const REAL *mats,
                               const double *fixed, const double *inputs, int64_t nin, const double *weights,
                               int nthreads) {
    if (B >= nthreads && B > 1) { /* states apart: each thread runs whole circuits on its own states */
        int par = nthreads > 1;
        (void)par;
        OMP_ITEMS
        for (int64_t b = 0; b < B; b++)
            FN(sv_run_state)(psi + 2 * (b << N), N, ops, nops, mats, fixed, inputs + b * nin, weights, 1);
        return;
    }
    for (int64_t b = 0; b < B; b++) /* few large states: the threads share each gate */
        FN(sv_run_state)(psi + 2 * (b << N), N, ops, nops, mats, fixed, inputs + b * nin, weights, nthreads);
}

/* lam <- (sum_q g_q Z_q) psi for one state: the diagonal is a 2**K table of the low bits' part plus
 * the high bits' constant per block */
SV_INLINE void FN(sv_observe)(REAL *lam, const REAL *psi, int N, const double *g) {
    int K = N < SV_EZ_BITS ? N : SV_EZ_BITS;
    double lo[1 << SV_EZ_BITS];
    lo[0] = 0;
    for (int q = 0; q < K; q++) lo[0] += g[q];
    for (int64_t i = 1; i < (INT64_C(1) << K); i++) lo[i] = lo[i & (i - 1)] - 2 * g[__builtin_ctzll(i)];
    for (int64_t h = 0; h < (INT64_C(1) << (N - K)); h++) {
        double hi = 0;
        for (int q = K; q < N; q++) hi += (((h << K) >> q) & 1) ? -g[q] : g[q];
        const REAL *s = psi + 2 * (h << K);
        REAL *l = lam + 2 * (h << K);
        SIMD
        for (int64_t i = 0; i < (INT64_C(1) << K); i++) {
            REAL o = (REAL)(lo[i] + hi);
            l[2 * i] = o * s[2 * i];
            l[2 * i + 1] = o * s[2 * i + 1];
        }
    }
}

/* the adjoint sweep of one state: psi (final state, undone in place), lam (scratch), g (N,) */
SV_INLINE void FN(sv_adjoint_one)(REAL *psi, REAL *lam, int N, const double *g, const int64_t *ops, int64_t nops,
                               const REAL *imats, const double *fixed, const double *in_b, const double *w,
                               double *din_b, double *dw_b, int nthreads) {
    FN(sv_observe)(lam, psi, N, g);
    int64_t last = -1; /* psi needs undoing only down to the first trainable op */
    for (int64_t k = 0; k < nops; k++)
        if (ops[SV_OP_WORDS * k + 4] == SV_SRC_INPUT || ops[SV_OP_WORDS * k + 4] == SV_SRC_WEIGHT) { last = k; break; }
    for (int64_t k = nops - 1; k >= 0 && k >= last && last >= 0; k--) {
        const int64_t *op = ops + SV_OP_WORDS * k;
        int trainable = op[4] == SV_SRC_INPUT || op[4] == SV_SRC_WEIGHT;
        if (trainable && nthreads == 1 && N <= SV1_MAX_N) { /* gradient and undo in one pass */
            double t = 0.5 * FN(sv_op_angle)(op, fixed, in_b, w);
            double d = FN(sv1_rot_adjoint)(psi, lam, N, op, cos(t), sin(t));
            if (op[4] == SV_SRC_INPUT) din_b[op[5]] += d;
            else dw_b[op[5]] += d;
            if (k == last) break;
            continue;
        }
        if (trainable) {
            int64_t x, z;
            int ny;
            double re = 0, im = 0;
            sv_generator(op, &x, &z, &ny);
            FN(sv_pauli_overlap_range)(lam, psi, 0, INT64_C(1) << N, x, z, &re, &im);
            double d = sv_phase_re(ny, im, -re); /* Im(i^ny (re + i im)) */
            if (op[4] == SV_SRC_INPUT) din_b[op[5]] += d;
            else dw_b[op[5]] += d;
        }
        if (k == last) break;
        FN(sv_op_apply)(psi, 1, N, op, imats, fixed, in_b, w, -1, nthreads);
        FN(sv_op_apply)(lam, 1, N, op, imats, fixed, in_b, w, -1, nthreads);
    }
}

HPR_KERNEL void FN(hpr_sv_adjoint)(REAL *psi, REAL *lam, int64_t B, int N, const double *g, const int64_t *ops, int64_t nops,
                        const REAL *imats, const double *fixed, const double *inputs, int64_t nin,
                        const double *weights, int64_t nw, double *din, double *dw, int nthreads) {
    if (B >= nthreads && B > 1) {
        int par = nthreads > 1;
        (void)par;
        OMP_ITEMS
        for (int64_t b = 0; b < B; b++)
            FN(sv_adjoint_one)(psi + 2 * (b << N), lam + 2 * (b << N), N, g + b * N, ops, nops, imats, fixed,
                               inputs + b * nin, weights, din + b * nin, dw + b * nw, 1);
        return;
    }
    for (int64_t b = 0; b < B; b++)
        FN(sv_adjoint_one)(psi + 2 * (b << N), lam + 2 * (b << N), N, g + b * N, ops, nops, imats, fixed,
                           inputs + b * nin, weights, din + b * nin, dw + b * nw, nthreads);
}
