/* State-vector kernels for hpr's quantum simulator: gates and measurements on a batch of B states of
 * N qubits, stored C-contiguous as (B, 2**N) complex numbers, each an interleaved (re, im) pair of
 * REALs (numpy's complex64 / complex128 layout). Qubit 0 is the LEAST significant bit of the amplitude
 * index (Qiskit, Qulacs). A 4x4 two-qubit matrix on (q1, q2) has q1 as its low bit: its row/column
 * index is b(q1) + 2 b(q2). Matrices are row-major, complex (interleaved) REALs.
 *
 * Batched parameters: every gate takes its matrix / diagonal for state 0 at U and for state b at
 * U + b * ustride REALs: ustride = 0 shares one matrix, ustride = 8 (2x2), 32 (4x4), 4 (2-diag) or
 * 8 (4-diag) gives one per state. cmask: a bitmask of control qubits (0 = none); the gate acts where
 * all of them are 1. The caller checks qubits (distinct, < N, N <= 62) and sizes; the kernels trust
 * them. nthreads: OpenMP threads (1 = serial; ignored without OpenMP). Buffers in, no allocation. */
#ifndef HPR_STATEVEC_H
#define HPR_STATEVEC_H
#include <stdint.h>

/* A compiled program (hpr.quantum.Circuit): nops ops of SV_OP_WORDS int64 each,
 *   {kind, q0, q1, mask, src, idx, off, 0}
 * kind: SV_OP_*; mask: the controls (1Q, X, RX, RY) or, for KQ, the block's qubits (its lowest the low
 * bit of the matrix index); off: where the op's matrix / diagonal starts in mats (REALs). A rotation
 * (RX, RY, RZ, RZZ: exp(-i theta G / 2)) takes theta from src: SV_SRC_FIXED fixed[idx], SV_SRC_INPUT
 * inputs[b * nin + idx] (one per state), SV_SRC_WEIGHT weights[idx]. Many small states run whole
 * circuits one state per thread (the state stays in cache); a few large ones share each gate. */
#define SV_OP_WORDS 8
enum { SV_OP_1Q, SV_OP_2Q, SV_OP_D1, SV_OP_D2, SV_OP_X, SV_OP_SWAP, SV_OP_KQ, SV_OP_RX, SV_OP_RY, SV_OP_RZ,
       SV_OP_RZZ };
enum { SV_SRC_NONE, SV_SRC_FIXED, SV_SRC_INPUT, SV_SRC_WEIGHT };

#define HPR_SV_DECLARE(REAL, SFX)                                                                    \
    /* psi <- U on qubit q where the qubits of cmask are 1 (U: 2x2). */                             \
    void hpr_sv_apply_1q##SFX(REAL *psi, int64_t B, int N, int q, int64_t cmask, const REAL *U,     \
                              int64_t ustride, int nthreads);                                        \
    /* psi <- U on (q1, q2), q1 the low bit of U's index (U: 4x4). */                               \
    void hpr_sv_apply_2q##SFX(REAL *psi, int64_t B, int N, int q1, int q2, const REAL *U,           \
                              int64_t ustride, int nthreads);                                        \
    /* amplitude *= d[bit q] (d: 2 complex). Entries exactly 1 are skipped. */                       \
    void hpr_sv_apply_diag_1q##SFX(REAL *psi, int64_t B, int N, int q, const REAL *d,               \
                                   int64_t dstride, int nthreads);                                   \
    /* amplitude *= d[b(q1) + 2 b(q2)] (d: 4 complex). Entries exactly 1 are skipped. */             \
    void hpr_sv_apply_diag_2q##SFX(REAL *psi, int64_t B, int N, int q1, int q2, const REAL *d,      \
                                   int64_t dstride, int nthreads);                                   \
    /* swap the amplitude pairs of qubit q where the qubits of cmask are 1 (X, CNOT, Toffoli). */    \
    void hpr_sv_apply_x##SFX(REAL *psi, int64_t B, int N, int q, int64_t cmask, int nthreads);      \
    /* exchange qubits q1 and q2. */                                                                 \
    void hpr_sv_apply_swap##SFX(REAL *psi, int64_t B, int N, int q1, int q2, int nthreads);         \
    /* out[b, q] = sum_i |psi[b, i]|^2 (1 - 2 bit_q(i)), out: (B, N) doubles, one pass. */          \
    void hpr_sv_expval_z##SFX(double *out, const REAL *psi, int64_t B, int N, int nthreads);        \
    /* out[b, i] = |psi[b, i]|^2, out: (B, 2**N) REALs. */                                           \
    void hpr_sv_probabilities##SFX(REAL *out, const REAL *psi, int64_t B, int N, int nthreads);     \
    /* out[b] = Re <psi_b| P |psi_b> for P = i^ny X^xmask Z^zmask (ny = number of Y factors). */    \
    void hpr_sv_expval_pauli##SFX(double *out, const REAL *psi, int64_t B, int N, int64_t xmask,    \
                                  int64_t zmask, int ny, int nthreads);                                                                \
    void hpr_sv_pauli_overlap##SFX(double *out, const REAL *lam, const REAL *psi, int64_t B, int N,   \
                                   int64_t xmask, int64_t zmask, int ny, int nthreads);            \
    /* psi <- U on the 2..5 qubits of qmask (U: 2**k x 2**k, lowest qubit the low bit). */           \
    void hpr_sv_apply_kq##SFX(REAL *psi, int64_t B, int N, int64_t qmask, const REAL *U, int nthreads); \
    /* psi <- the program applied to every state (inputs: (B, nin)). */                            \
    void hpr_sv_run##SFX(REAL *psi, int64_t B, int N, const int64_t *ops, int64_t nops, const REAL *mats, \
                         const double *fixed, const double *inputs, int64_t nin, const double *weights, \
                         int nthreads);                                                              \
    /* the adjoint sweep: psi holds the program's final states (undone in place), lam is scratch of  \
     * the same size, g (B, N) the upstream gradient of <Z_q>; imats the inverses' matrices. Adds     \
     * d/d inputs into din (B, nin) and each state's d/d weights into dw (B, nw). */                 \
    void hpr_sv_adjoint##SFX(REAL *psi, REAL *lam, int64_t B, int N, const double *g, const int64_t *ops, \
                             int64_t nops, const REAL *imats, const double *fixed, const double *inputs, \
                             int64_t nin, const double *weights, int64_t nw, double *din, double *dw,   \
                             int nthreads);

/* Set the distance in bytes from which the two amplitudes of a pair are staged through a buffer
 * (statevec.c, "far pairs"; default 2**28) when nbytes > 0; returns the previous value. */
int64_t hpr_sv_far_bytes(int64_t nbytes);

HPR_SV_DECLARE(float, _f32)
HPR_SV_DECLARE(double, _f64)
#endif
