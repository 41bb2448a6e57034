/* One instruction-set level of nn.c's kernels: nn_impl.h and attention_impl.h compiled for float and
 * for double, and the two op tables of this level (nn_ops_f32<ISA>, nn_ops_f64<ISA>). nn.c defines
 * ISA (the name suffix: _baseline, _avx2, _avx512), VBYTES (vector width in bytes), MR and NVMAX (the
 * attention micro-kernel's register block) and opens the level's target region before including this.
 * No include guard on purpose. */

/* float: the vectorisable polynomial exp. GELU clamps its sigmoid's argument to +-GELU_ZMAX: sigmoid(30)
 * is 1 in float, and the compiler evaluates the clamped branch for every element, so its constant must
 * not push products with ordinary gradients into denormals (1 / (1 + e^30) ~ 1e-13 does not).
 * EXP_INRANGE: the exp without its own +-80 clamps, for arguments clamped already (GELU's +-30): the same
 * values, NaN included, for ~35% less time in GELU's forward here (the clamps are compares and blends). */
#define REAL float
#define SFX _f32
#define LEXP hpr_expf
#define LTANH hpr_tanhf
#define GELU_ZMAX 30.0f
#define EXP hpr_expf
#define EXP_INRANGE hpr_expf_inrange
#define LOG logf
#define SQRT sqrtf
#include "nn_impl.h"
#include "attention_impl.h"
static const struct hpr_nn_ops_f32 HPR_CAT(nn_ops_f32, ISA) = {HPR_NN_OPS(NN_OP_INIT, float)};
#undef REAL
#undef SFX
#undef LEXP
#undef LTANH
#undef GELU_ZMAX
#undef EXP
#undef EXP_INRANGE
#undef LOG
#undef SQRT

/* double: libm */
#define REAL double
#define SFX _f64
#define LEXP exp
#define LTANH tanh
#define GELU_ZMAX 700.0
#define EXP exp
#define EXP_INRANGE exp
#define LOG log
#define SQRT sqrt
#include "nn_impl.h"
#include "attention_impl.h"
static const struct hpr_nn_ops_f64 HPR_CAT(nn_ops_f64, ISA) = {HPR_NN_OPS(NN_OP_INIT, double)};
#undef REAL
#undef SFX
#undef LEXP
#undef LTANH
#undef GELU_ZMAX
#undef EXP
#undef EXP_INRANGE
#undef LOG
#undef SQRT
