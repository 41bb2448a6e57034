/* Causal multi-head attention in the flash style (Dao et al., FlashAttention-2), the body of nn.c's
 * hpr_attention_forward/backward: included once per (instruction-set level, REAL), like nn_impl.h.
 * The level gives VBYTES (its vector width), MR and NVMAX (the micro-kernel's register block); nn.c
 * gives ATT_BQ, ATT_BK (tile sizes) and ATT_PAD. No include guard on purpose.
 *
 * Each (sequence, head) pair is one task for the OpenMP threads. A task packs its head into the
 * thread's scratch (O(T D), never O(T^2)): q scaled by 1/sqrt(D) and k, v, dy as rows padded to Dp
 * columns, or transposed (D, Tp) where a product wants them along its vectors. Queries are taken in
 * tiles of ATT_BQ, keys in tiles of ATT_BK; only tiles on or below the diagonal are visited, and
 * inside the diagonal tile only the pairs j <= i are kept.
 *
 * forward, per query tile (queries i0.., its scores TRANSPOSED: keys down the rows, the BQ queries
 * along the vectors, so each query is a lane), for each key tile j (online softmax):
 *     S^T = K[j] Qs^T                          (BK, BQ) scores, already scaled
 *     m' = max(m, colmax S^T);  P^T = exp(S^T - m');  a = exp(m - m')
 *     l = a l + colsum P^T;     O = a O + P V[j];  m = m'
 *   then y = O / l and lse = m + log l: the row log-sum-exp is all backward keeps (B, H, T).
 *   m, l and a are vectors over the queries and every max and sum runs element-wise down the key
 *   rows: no horizontal reduction, no scalar exp per row. O stays as rows (BQ, Dp): its product reads
 *   P^T by strides as P, and a scales each row by one factor. The scores are the backward's bit for
 *   bit (the same products summed in the same order). Causal: in key rows that cross the diagonal
 *   the entries of later keys select 0 (exp of -inf is not 0 in hpr_expf); micro-kernel blocks of
 *   S^T whose keys all follow every query of a vector are not computed, and a block of O's rows
 *   stops at its last visible key.
 * backward, with Di = rowsum(dy * y), per query tile i and key tile j:
 *     P = exp(Qs Kt[:, j] - lse)   (recomputed)      dP = dY Vt[:, j]
 *     dS = P (dP - Di)                              dV[j] += P^T dY
 *     dK[j] += dS^T Qs   (Qs carries the 1/sqrt(D))  dQ += dS K[j]   (times 1/sqrt(D) when written)
 *   In a tile that crosses the diagonal (att_gemm_band) the micro-kernel blocks the mask makes 0 are
 *   not computed: S and dP skip the key vectors later than a block's last query, dV and dK start a key
 *   block's sum at its first visible query, dQ ends a query block's sum at its last visible key
 *   (~6% of the backward at T = 128-256; the sums that remain are the same, so the same bits).
 *
 * Every product is one micro-kernel: MR rows of C by nv vectors, C[r] (+)= sum_k A[r, k] B[k], with
 * A read by strides (a row of Q, or a column of P for P^T) and broadcast, B rows loaded as vectors
 * (GCC/Clang vector extensions of the level's width: the accumulators stay in registers). Packed
 * buffers are zero padded (rows to a whole tile, columns to Dp), so the micro-kernel never has a
 * ragged edge. */

typedef REAL FN(vec) __attribute__((vector_size(VBYTES)));
#define VL ((int64_t)(VBYTES / sizeof(REAL)))

static inline FN(vec) FN(vload)(const REAL *p) { FN(vec) v; memcpy(&v, p, sizeof v); return v; }
static inline void FN(vstore)(REAL *p, FN(vec) v) { memcpy(p, &v, sizeof v); }

/* c[r][0 : nv VL] (+)= sum_{k < kdim} a[r ars + k aks] * b[k ldb + 0 : nv VL] for r < MR; nv <= NVMAX is
 * a constant after inlining, so acc[][] is MR x nv registers. */
static inline __attribute__((always_inline)) void FN(att_mk)(const int nv, REAL *c, int64_t ldc, const REAL *a,
                                                             int64_t ars, int64_t aks, const REAL *b, int64_t ldb,
                                                             int64_t kdim, int accumulate) {
    FN(vec) acc[MR][NVMAX];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = accumulate ? FN(vload)(c + r * ldc + v * VL) : (FN(vec)){0};
    for (int64_t k = 0; k < kdim; k++) {
        FN(vec) bv[NVMAX];
        for (int v = 0; v < nv; v++) bv[v] = FN(vload)(b + k * ldb + v * VL);
        for (int r = 0; r < MR; r++) {
            REAL s = a[r * ars + k * aks];
            for (int v = 0; v < nv; v++) acc[r][v] += s * bv[v];
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < nv; v++) FN(vstore)(c + r * ldc + v * VL, acc[r][v]);
}

/* C (rows, nvec VL) (+)= A (rows, kdim) B (kdim, nvec VL); rows a multiple of MR. The vectors are split
 * into near-equal chunks of at most NVMAX; each chunk's panel of B is reused by every row block. The
 * causal limits, per row block r0 (ATT_NO_BAND for none): only the vectors v >= (r0 - vskew) / VL and
 * v <= (r0 + vlast) / VL are computed (the others are left unwritten), and k runs over
 * [r0 - klo, r0 + khi) only. Inlined into the three drivers below, each with its own limits constant. */
#define ATT_NO_BAND ((int64_t)1 << 40)
static inline __attribute__((always_inline)) void FN(att_gemm_lim)(REAL *c, int64_t ldc, const REAL *a,
                                                                   int64_t ars, int64_t aks, int64_t rows,
                                                                   const REAL *b, int64_t ldb, int64_t nvec,
                                                                   int64_t kdim, int accumulate, int64_t vskew,
                                                                   int64_t vlast, int64_t klo, int64_t khi) {
#ifdef ATT_NO_GEMM
    return;
#endif
    int64_t nch = (nvec + NVMAX - 1) / NVMAX;
    for (int64_t ch = 0, v0 = 0; ch < nch; ch++) {
        const int64_t nv = (nvec - v0 + (nch - ch) - 1) / (nch - ch);
        for (int64_t r0 = 0; r0 < rows; r0 += MR) {
            const int64_t vs = r0 > vskew ? (r0 - vskew) / VL : 0, vb = vs > v0 ? vs : v0;
            const int64_t ve = (r0 + vlast) / VL + 1, n = (ve < v0 + nv ? ve : v0 + nv) - vb;
            const int64_t k0 = r0 - klo > 0 ? r0 - klo : 0, k1 = r0 + khi < kdim ? r0 + khi : kdim;
            const int64_t kd = k1 > k0 ? k1 - k0 : 0;
            if (n <= 0 || (accumulate && kd == 0)) continue;  /* nothing to add */
            REAL *cc = c + r0 * ldc + vb * VL;
            const REAL *aa = a + r0 * ars + k0 * aks, *bb = b + vb * VL + k0 * ldb;
            if (n == 1)
                FN(att_mk)(1, cc, ldc, aa, ars, aks, bb, ldb, kd, accumulate);
            else if (n == 2)
                FN(att_mk)(2, cc, ldc, aa, ars, aks, bb, ldb, kd, accumulate);
            else
                FN(att_mk)(3, cc, ldc, aa, ars, aks, bb, ldb, kd, accumulate);
        }
        v0 += nv;
    }
}

/* the whole product (tiles below the diagonal) */
static void FN(att_gemm)(REAL *c, int64_t ldc, const REAL *a, int64_t ars, int64_t aks, int64_t rows,
                         const REAL *b, int64_t ldb, int64_t nvec, int64_t kdim, int accumulate) {
    FN(att_gemm_lim)(c, ldc, a, ars, aks, rows, b, ldb, nvec, kdim, accumulate, ATT_NO_BAND, ATT_NO_BAND,
                     ATT_NO_BAND, ATT_NO_BAND);
}

/* the forward's tiles: S^T's key blocks skip the query vectors wholly before them (vskew), and a block
 * of O's query rows stops at its last visible key (k < r0 + kcap) */
static void FN(att_gemm_causal)(REAL *c, int64_t ldc, const REAL *a, int64_t ars, int64_t aks, int64_t rows,
                                const REAL *b, int64_t ldb, int64_t nvec, int64_t kdim, int accumulate,
                                int64_t kcap, int64_t vskew) {
    FN(att_gemm_lim)(c, ldc, a, ars, aks, rows, b, ldb, nvec, kdim, accumulate, vskew, ATT_NO_BAND, ATT_NO_BAND,
                     kcap);
}

/* The backward's diagonal tiles (diag = i0 - j0: key c of the tile is visible to query r iff
 * c <= r + diag): S and dP (rows = queries, vectors = keys) compute only the vectors up to a block's
 * last visible key (vlast = MR - 1 + diag; the later ones are left for the softmax tile's selects), dV
 * and dK (rows = keys, k = queries) start at a block's first visible query (klo = diag), dQ (rows =
 * queries, k = keys) ends at its last visible key (khi = MR + diag). */
static void FN(att_gemm_band)(REAL *c, int64_t ldc, const REAL *a, int64_t ars, int64_t aks, int64_t rows,
                              const REAL *b, int64_t ldb, int64_t nvec, int64_t kdim, int accumulate,
                              int64_t vlast, int64_t klo, int64_t khi) {
    FN(att_gemm_lim)(c, ldc, a, ars, aks, rows, b, ldb, nvec, kdim, accumulate, ATT_NO_BAND, vlast, klo, khi);
}

/* Ask for row i + ATT_PREFETCH of x (D REALs at stride ld) while row i is copied: the rows come from
 * the big activation buffers, usually from L3 or memory, and the loads of one row alone cannot hide
 * that latency. */
static inline void FN(att_prefetch_row)(const REAL *x, int64_t ld, int64_t i, int64_t T, int64_t D) {
    if (i + ATT_PREFETCH < T)
        for (int64_t d = 0; d < D; d += 64 / (int64_t)sizeof(REAL)) __builtin_prefetch(x + (i + ATT_PREFETCH) * ld + d);
}

/* Prefetch rows [i0, i1) of the NEXT task's head (x + next, D REALs each at stride ld) while this one
 * computes: spread over the query tiles, the next head's rows are in cache when its packing starts
 * (they sit in the same rows of the activation buffer, a few heads further on). next = 0: none. */
static inline void FN(att_prefetch_next)(const REAL *x, int64_t next, int64_t ld, int64_t i0, int64_t i1,
                                         int64_t D) {
    if (!next) return;
    for (int64_t i = i0; i < i1; i++)
        for (int64_t d = 0; d < D; d += 64 / (int64_t)sizeof(REAL)) __builtin_prefetch(x + next + i * ld + d);
}

/* rows (T, D) at stride ld, times f, into out (Tp, Dp): zero padded to the right and below */
static void FN(att_pack_rows)(REAL *out, const REAL *x, int64_t ld, int64_t T, int64_t D, int64_t Tp,
                              int64_t Dp, REAL f) {
    for (int64_t i = 0; i < Tp; i++) {
        REAL *o = out + i * Dp;
        int64_t n = i < T ? D : 0;
        FN(att_prefetch_row)(x, ld, i, T, D);
        for (int64_t d = 0; d < n; d++) o[d] = x[i * ld + d] * f;
        for (int64_t d = n; d < Dp; d++) o[d] = 0;
    }
}

/* rows (T, D) at stride ld, transposed into out (D, Tp), columns T.. zero, and when rows_out is not
 * NULL also copied as rows into rows_out (Tp, Dp), zero padded (one read of x for both). Blocks of 16
 * rows: each d then writes one whole cache line of out from 16 rows that stay in L1 (a row at a time
 * would store with stride Tp, which for T = 1024 floats maps every store of a row to one L1 set). */
static void FN(att_pack_cols)(REAL *out, REAL *rows_out, const REAL *x, int64_t ld, int64_t T, int64_t D,
                              int64_t Tp, int64_t Dp, REAL f) {
    for (int64_t j0 = 0; j0 < Tp; j0 += 16) {
        int64_t nj = T - j0 < 16 ? (T > j0 ? T - j0 : 0) : 16;
        for (int64_t jj = 0; jj < nj; jj++) FN(att_prefetch_row)(x, ld, j0 + jj, T, D);
        for (int64_t d = 0; d < D; d++) {
            REAL *o = out + d * Tp + j0;
            for (int64_t jj = 0; jj < nj; jj++) o[jj] = x[(j0 + jj) * ld + d] * f;
            for (int64_t jj = nj; jj < 16; jj++) o[jj] = 0;
        }
        if (rows_out)
            for (int64_t jj = 0; jj < 16; jj++) {
                REAL *o = rows_out + (j0 + jj) * Dp;
                int64_t n = jj < nj ? D : 0;
                for (int64_t d = 0; d < n; d++) o[d] = x[(j0 + jj) * ld + d];
                for (int64_t d = n; d < Dp; d++) o[d] = 0;
            }
    }
}

/* the per-thread scratch, aligned to 64 bytes (hpr_attention_scratch counts the slack) */
static inline REAL *FN(att_scratch)(REAL *scratch, int64_t T, int64_t D, int tid) {
    uintptr_t p = (uintptr_t)(scratch + HPR_ATT_SCRATCH(T, D) * tid);
    return (REAL *)((p + 63) & ~(uintptr_t)63);
}

/* the vector helpers of the transposed softmax: select by a comparison's lane mask, max, iota */
static inline FN(vec) FN(vsel)(__typeof__((FN(vec)){0} > (FN(vec)){0}) mask, FN(vec) a, FN(vec) b) {
    return (FN(vec))((mask & (__typeof__(mask))a) | (~mask & (__typeof__(mask))b));
}
static inline FN(vec) FN(vmax)(FN(vec) a, FN(vec) b) { return FN(vsel)(a > b, a, b); }
static inline FN(vec) FN(viota)(int64_t first) {
    FN(vec) x;
    for (int64_t i = 0; i < VL; i++) x[i] = (REAL)(first + i);
    return x;
}

/* exp of x <= 0 (a score less its running max): float needs only hpr_expf's low clamp */
static inline REAL FN(att_exp_neg)(REAL x) {
    if (sizeof(REAL) == sizeof(float)) x = x < -80 ? -80 : x;
    return sizeof(REAL) == sizeof(float) ? EXP_INRANGE(x) : EXP(x);
}

/* Online softmax of one score tile, transposed: st (nk keys, ATT_BQ queries) holds S^T for keys j0..,
 * queries i0..; each query is a lane, so the running max m, the sum l and the rescale alpha are vectors
 * over the queries and every reduction over the keys is element-wise down the rows. Key j0 + j is
 * visible to query i0 + q iff j0 + j <= i0 + q, i.e. q >= j - diag (diag = i0 - j0): rows j <= diag
 * are whole, the rest (the diagonal) select. st becomes P^T (masked entries exactly 0: hpr_expf(-inf)
 * is not); alpha = exp(m_old - m_new) is left in a for the caller's rescale of O. Every query of the
 * tile sees key 0, so m is finite after the first key tile; padded query lanes (their Qs^T columns
 * are zero) see scores 0 and stay finite. */
static void FN(att_softmax_cols)(REAL *st, REAL *m, REAL *l, REAL *a, int64_t nk, int64_t diag) {
    enum { NQ = ATT_BQ / VL };  /* vectors per key row */
    FN(vec) mv[NQ];
    REAL mx[ATT_BQ], sum[ATT_BQ];
    for (int v = 0; v < NQ; v++) mv[v] = FN(vload)(m + v * VL);
    for (int64_t j = 0; j < nk; j++) {  /* the column max, in registers */
        const REAL *sr = st + j * ATT_BQ;
        const int64_t t = j - diag;  /* lanes q >= t of row j are visible */
        if (t <= 0)
            for (int v = 0; v < NQ; v++) mv[v] = FN(vmax)(mv[v], FN(vload)(sr + v * VL));
        else
            for (int v = 0; v < NQ; v++) {
                FN(vec) x = FN(vsel)(FN(viota)(v * VL) >= (REAL)t, FN(vload)(sr + v * VL), (FN(vec)){0} - INFINITY);
                mv[v] = FN(vmax)(mv[v], x);
            }
    }
    for (int v = 0; v < NQ; v++) FN(vstore)(mx + v * VL, mv[v]);
    SIMD
    for (int64_t q = 0; q < ATT_BQ; q++) {
        a[q] = EXP(m[q] - mx[q]);  /* m = -inf (first tile): a tiny or 0, and it multiplies zeros */
        m[q] = mx[q];
        sum[q] = 0;
    }
    for (int64_t j = 0; j < nk; j++) {
        REAL *sr = st + j * ATT_BQ;
        const int64_t t = j - diag;
        if (t <= 0) {
            SIMD
            for (int64_t q = 0; q < ATT_BQ; q++) {
                REAL e = FN(att_exp_neg)(sr[q] - m[q]);
                sr[q] = e;
                sum[q] += e;
            }
        } else {
            SIMD
            for (int64_t q = 0; q < ATT_BQ; q++) {
                REAL e = FN(att_exp_neg)(sr[q] - m[q]);
                e = q >= t ? e : 0;  /* select: sr may hold anything there */
                sr[q] = e;
                sum[q] += e;
            }
        }
    }
    SIMD
    for (int64_t q = 0; q < ATT_BQ; q++) l[q] = l[q] * a[q] + sum[q];
}

/* the forward of one (sequence, head): y rows (T, D) at stride sy, lse (T). The scores transposed,
 * S^T = K Qs^T (keys down, queries along the vectors); O = a O + P V reads P^T by strides. */
static void FN(att_forward_head)(REAL *y, REAL *lse, const REAL *q, const REAL *k, const REAL *v, int64_t T,
                                 int64_t D, int64_t sq, int64_t sy, REAL sc, REAL *ws, int64_t next) {
    const int64_t Dp = ATT_ROUND(D, ATT_PAD), Tp = ATT_ROUND(T, ATT_BK), nvd = Dp / VL;
    REAL *qt = ws, *ks = qt + Tp * Dp, *vs = ks + Tp * Dp, *o = vs + Tp * Dp, *st = o + ATT_BQ * Dp;
    REAL *m = st + ATT_BK * ATT_BQ, *l = m + ATT_BQ, *a = l + ATT_BQ;
    FN(att_pack_cols)(qt, NULL, q, sq, T, D, Tp, Dp, sc);  /* Qs^T (D, Tp) */
    FN(att_pack_rows)(ks, k, sq, T, D, Tp, Dp, 1);          /* K (Tp, Dp) */
    FN(att_pack_rows)(vs, v, sq, T, D, Tp, Dp, 1);          /* V (Tp, Dp) */
    for (int64_t i0 = 0; i0 < T; i0 += ATT_BQ) {
        const int64_t rows = T - i0 < ATT_BQ ? T - i0 : ATT_BQ, rowsp = ATT_ROUND(rows, MR), jend = i0 + rows;
        FN(att_prefetch_next)(q, next, sq, i0, jend, D);
        FN(att_prefetch_next)(k, next, sq, i0, jend, D);
        FN(att_prefetch_next)(v, next, sq, i0, jend, D);
        for (int64_t r = 0; r < ATT_BQ; r++) { m[r] = -INFINITY; l[r] = 0; }
        memset(o, 0, (size_t)(rowsp * Dp) * sizeof(REAL));
        for (int64_t j0 = 0; j0 < jend; j0 += ATT_BK) {
            const int64_t nk = jend - j0 < ATT_BK ? jend - j0 : ATT_BK, nkr = ATT_ROUND(nk, MR);
            /* S^T = K Qs^T; key rows r0.. skip the query vectors wholly before key j0 + r0 */
            FN(att_gemm_causal)(st, ATT_BQ, ks + j0 * Dp, Dp, 1, nkr, qt + i0, Tp, ATT_BQ / VL, D, 0, D, i0 - j0);
            FN(att_softmax_cols)(st, m, l, a, nk, i0 - j0);
            for (int64_t r = 0; r < rowsp; r++) {  /* O = a O: a row's one factor times its vectors */
                REAL *orow = o + r * Dp;
                const REAL ar = a[r];
                SIMD
                for (int64_t d = 0; d < Dp; d++) orow[d] *= ar;
            }
            /* O += P V, P = (P^T)^T; query rows r0.. stop at key i0 + r0 + MR (P is 0 beyond) */
            FN(att_gemm_causal)(o, Dp, st, 1, ATT_BQ, rowsp, vs + j0 * Dp, Dp, nvd, nk, 1, i0 + MR - j0, rowsp);
        }
        for (int64_t r = 0; r < rows; r++) {
            const REAL inv = (REAL)1 / l[r];
            REAL *yr = y + (i0 + r) * sy;
            SIMD
            for (int64_t d = 0; d < D; d++) yr[d] = o[r * Dp + d] * inv;
            lse[i0 + r] = m[r] + LOG(l[r]);
        }
    }
}

/* Causal attention over the B*H (sequence, head) pairs. q, k, v: row t of sequence b, head h starts at
 * b*T*sq + t*sq + h*D (sq = 3C for the fused qkv buffer); y the same with row stride sy. lse (B, H, T):
 * the row log-sum-exp of the scaled scores, kept for backward. D <= 128 (the caller checks). scratch:
 * nthreads * hpr_attention_scratch(T, D) REALs. */
NN_KERNEL void FN(hpr_attention_forward)(REAL *y, REAL *lse, const REAL *q, const REAL *k, const REAL *v,
                                         int64_t B, int64_t T, int64_t H, int64_t D, int64_t sq, int64_t sy,
                                         double scale, REAL *scratch, int nthreads) {
    int nt = nthreads < 1 ? 1 : nthreads;
    int par = nt > 1 && B * H > 1;
    (void)par;
    OMP_REGION
    {
        REAL *ws = FN(att_scratch)(scratch, T, D, OMP_TID);
        OMP_FOR_TASKS
        for (int64_t bh = 0; bh < B * H; bh++) {
            int64_t b = bh / H, h = bh % H, off = b * T * sq + h * D;
            int64_t nb = bh + nt;  /* the task this thread most likely takes next (dynamic, 1) */
            int64_t next = nb < B * H ? nb / H * T * sq + nb % H * D - off : 0;
            FN(att_forward_head)(y + b * T * sy + h * D, lse + bh * T, q + off, k + off, v + off, T, D, sq, sy,
                                 (REAL)scale, ws, next);
        }
    }
}

/* softmax backward of one tile, in place: s holds the scores and becomes P = exp(s - lse); dp holds
 * dL/dP and becomes dS = P (dP - Di) (the 1/sqrt(D) is applied by the caller). Entries right of the
 * diagonal and rows beyond `rows` are zeroed up to nkr columns. */
static void FN(att_softmax_backward_tile)(REAL *s, REAL *dp, const REAL *lse, const REAL *di, int64_t i0,
                                          int64_t j0, int64_t rows, int64_t rowsp, int64_t nk, int64_t nkr) {
    const int64_t nkw = ATT_ROUND(nkr, VL);  /* whole vectors; entries j >= n (masked) become 0 */
    for (int64_t r = 0; r < rowsp; r++) {
        REAL *sr = s + r * ATT_BK, *dr = dp + r * ATT_BK;
        int64_t n = i0 + r - j0 + 1;
        n = r >= rows ? 0 : n < nk ? n : nk;
        const REAL l = r < rows ? lse[i0 + r] : 0, dd = r < rows ? di[i0 + r] : 0;
        SIMD
        for (int64_t j = 0; j < nkw; j++) {
            REAL p = EXP(sr[j] - l);
            p = j < n ? p : 0;
            REAL g = j < n ? dr[j] - dd : 0;  /* select, not multiply: masked entries may hold anything */
            sr[j] = p;
            dr[j] = p * g;
        }
    }
}

/* the backward of one (sequence, head): dq, dk, dv rows at stride sq (written whole) */
static void FN(att_backward_head)(REAL *dq, REAL *dk, REAL *dv, const REAL *dy, const REAL *y, const REAL *lse,
                                  const REAL *q, const REAL *k, const REAL *v, int64_t T, int64_t D, int64_t sq,
                                  int64_t sy, REAL sc, REAL *ws, int64_t next, int64_t ynext) {
    const int64_t Dp = ATT_ROUND(D, ATT_PAD), Tp = ATT_ROUND(T, ATT_BK), nvd = Dp / VL;
    REAL *qs = ws, *ks = qs + Tp * Dp, *kt = ks + Tp * Dp, *vt = kt + Tp * Dp, *dys = vt + Tp * Dp;
    REAL *dka = dys + Tp * Dp, *dva = dka + Tp * Dp, *dqt = dva + Tp * Dp, *s = dqt + ATT_BQ * Dp;
    REAL *dp = s + ATT_BQ * ATT_BK, *di = dp + ATT_BQ * ATT_BK;
    FN(att_pack_rows)(qs, q, sq, T, D, Tp, Dp, sc);
    FN(att_pack_cols)(kt, ks, k, sq, T, D, Tp, Dp, 1);
    FN(att_pack_cols)(vt, NULL, v, sq, T, D, Tp, Dp, 1);
    FN(att_pack_rows)(dys, dy, sy, T, D, Tp, Dp, 1);
    memset(dka, 0, (size_t)(2 * Tp * Dp) * sizeof(REAL));  /* dK and dV accumulators */
    for (int64_t i = 0; i < T; i++) {  /* Di = rowsum(dy * y) = rowsum(P * dP) */
        FN(att_prefetch_row)(y, sy, i, T, D);
        const REAL *yr = y + i * sy, *g = dys + i * Dp;
        REAL acc = 0;
        SIMD_SUM(acc)
        for (int64_t d = 0; d < D; d++) acc += g[d] * yr[d];
        di[i] = acc;
    }
    for (int64_t i0 = 0; i0 < T; i0 += ATT_BQ) {
        const int64_t rows = T - i0 < ATT_BQ ? T - i0 : ATT_BQ, rowsp = ATT_ROUND(rows, MR), jend = i0 + rows;
        const REAL *qi = qs + i0 * Dp, *dyi = dys + i0 * Dp;
        FN(att_prefetch_next)(q, next, sq, i0, jend, D);
        FN(att_prefetch_next)(k, next, sq, i0, jend, D);
        FN(att_prefetch_next)(v, next, sq, i0, jend, D);
        FN(att_prefetch_next)(dy, ynext, sy, i0, jend, D);
        FN(att_prefetch_next)(y, ynext, sy, i0, jend, D);
        memset(dqt, 0, (size_t)(rowsp * Dp) * sizeof(REAL));
        for (int64_t j0 = 0; j0 < jend; j0 += ATT_BK) {
            const int64_t nk = jend - j0 < ATT_BK ? jend - j0 : ATT_BK, nvk = (nk + VL - 1) / VL;
            const int64_t nkr = ATT_ROUND(nk, MR);
            const int64_t diag = i0 - j0;
            if (nk - 1 <= diag) {  /* every key of the tile is visible to every query: no mask */
                FN(att_gemm)(s, ATT_BK, qi, Dp, 1, rowsp, kt + j0, Tp, nvk, D, 0);    /* S = Qs K^T */
                FN(att_gemm)(dp, ATT_BK, dyi, Dp, 1, rowsp, vt + j0, Tp, nvk, D, 0);  /* dP = dY V^T */
                FN(att_softmax_backward_tile)(s, dp, lse, di, i0, j0, rows, rowsp, nk, nkr);
                FN(att_gemm)(dva + j0 * Dp, Dp, s, 1, ATT_BK, nkr, dyi, Dp, nvd, rowsp, 1);  /* dV += P^T dY */
                FN(att_gemm)(dka + j0 * Dp, Dp, dp, 1, ATT_BK, nkr, qi, Dp, nvd, rowsp, 1);  /* dK += dS^T Qs */
                FN(att_gemm)(dqt, Dp, dp, ATT_BK, 1, rowsp, ks + j0 * Dp, Dp, nvd, nk, 1);   /* dQ += dS K */
                continue;
            }
            /* the diagonal tile: the same products without the blocks the mask zeroes */
            FN(att_gemm_band)(s, ATT_BK, qi, Dp, 1, rowsp, kt + j0, Tp, nvk, D, 0, MR - 1 + diag, ATT_NO_BAND,
                              ATT_NO_BAND);
            FN(att_gemm_band)(dp, ATT_BK, dyi, Dp, 1, rowsp, vt + j0, Tp, nvk, D, 0, MR - 1 + diag, ATT_NO_BAND,
                              ATT_NO_BAND);
            FN(att_softmax_backward_tile)(s, dp, lse, di, i0, j0, rows, rowsp, nk, nkr);
            FN(att_gemm_band)(dva + j0 * Dp, Dp, s, 1, ATT_BK, nkr, dyi, Dp, nvd, rowsp, 1, ATT_NO_BAND, diag,
                              ATT_NO_BAND);
            FN(att_gemm_band)(dka + j0 * Dp, Dp, dp, 1, ATT_BK, nkr, qi, Dp, nvd, rowsp, 1, ATT_NO_BAND, diag,
                              ATT_NO_BAND);
            FN(att_gemm_band)(dqt, Dp, dp, ATT_BK, 1, rowsp, ks + j0 * Dp, Dp, nvd, nk, 1, ATT_NO_BAND,
                              ATT_NO_BAND, MR + diag);
        }
        for (int64_t r = 0; r < rows; r++)
            for (int64_t d = 0; d < D; d++) dq[(i0 + r) * sq + d] = dqt[r * Dp + d] * sc;
    }
    for (int64_t j = 0; j < T; j++)
        for (int64_t d = 0; d < D; d++) {
            dk[j * sq + d] = dka[j * Dp + d];
            dv[j * sq + d] = dva[j * Dp + d];
        }
}

/* Backward of hpr_attention_forward: dq, dk, dv (strided as q, k, v; slices of the fused dqkv buffer,
 * overwritten) from dy, the forward's y and lse, and q, k, v. */
NN_KERNEL void FN(hpr_attention_backward)(REAL *dq, REAL *dk, REAL *dv, const REAL *dy, const REAL *y,
                                          const REAL *lse, const REAL *q, const REAL *k, const REAL *v, int64_t B,
                                          int64_t T, int64_t H, int64_t D, int64_t sq, int64_t sy, double scale,
                                          REAL *scratch, int nthreads) {
    int nt = nthreads < 1 ? 1 : nthreads;
    int par = nt > 1 && B * H > 1;
    (void)par;
    OMP_REGION
    {
        REAL *ws = FN(att_scratch)(scratch, T, D, OMP_TID);
        OMP_FOR_TASKS
        for (int64_t bh = 0; bh < B * H; bh++) {
            int64_t b = bh / H, h = bh % H, off = b * T * sq + h * D, yo = b * T * sy + h * D;
            int64_t nb = bh + nt;  /* the task this thread most likely takes next (dynamic, 1) */
            int64_t next = nb < B * H ? nb / H * T * sq + nb % H * D - off : 0;
            int64_t ynext = nb < B * H ? nb / H * T * sy + nb % H * D - yo : 0;
            FN(att_backward_head)(dq + off, dk + off, dv + off, dy + yo, y + yo, lse + bh * T, q + off, k + off,
                                  v + off, T, D, sq, sy, (REAL)scale, ws, next, ynext);
        }
    }
}

#undef VL
