/* Shared by hpr's C kernels: how a kernel is compiled for the machine it runs on, never with
 * -march=native, so a wheel built on one x86-64 machine runs on any other.
 *
 * Two mechanisms, one set of levels: baseline x86-64 (SSE2), avx2 (x86-64-v3: AVX2, FMA, BMI2, F16C)
 * and avx512 (x86-64-v4: AVX-512 F/BW/DQ/VL/CD).
 *
 * 1. Run-time dispatch (nn.c): the kernel bodies are compiled once per level inside
 *    HPR_TARGET_AVX2_BEGIN / HPR_TARGET_AVX512_BEGIN ... HPR_TARGET_END regions (GCC's "#pragma GCC
 *    target"), and a table of function pointers per level is chosen at import by hpr_isa_set(), from
 *    the levels hpr_isa_cpu() finds on this CPU; HPR_ISA (hpr.config) may force a lower one, so tests
 *    run every variant the machine has. HPR_ISA_VARIANTS is 1 where this is compiled, 0 where the
 *    compiler has no target pragmas (another compiler or architecture, or -DHPR_NO_CLONES): then only
 *    the baseline exists and hpr_isa_cpu() says so.
 * 2. HPR_KERNEL (statevec.c): GCC's target_clones, resolved by glibc's ifunc when the library loads
 *    (the widest clone the CPU has; not overridable at run time). Other compilers: one build. */
#ifndef HPR_CLONES_H
#define HPR_CLONES_H
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 12 && !defined(HPR_NO_CLONES)
#define HPR_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HPR_KERNEL
#endif

#define HPR_ISA_BASELINE 0
#define HPR_ISA_AVX2 1
#define HPR_ISA_AVX512 2

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8 && !defined(HPR_NO_CLONES)
#define HPR_ISA_VARIANTS 1
/* the features of x86-64-v3 and -v4 (as GCC spells them); v4 also asks for 512-bit auto-vectorised
 * loops (GCC's generic tuning would otherwise keep those at 256 bits) */
#define HPR_TARGET_AVX2_BEGIN \
    _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c,bmi,bmi2,popcnt\")")
#define HPR_TARGET_AVX512_BEGIN                                                                          \
    _Pragma("GCC push_options")                                                                          \
    _Pragma("GCC target(\"avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,fma,f16c,bmi,bmi2,popcnt,prefer-vector-width=512\")")
#define HPR_TARGET_END _Pragma("GCC pop_options")

/* The widest level this CPU (and its OS: libgcc checks XCR0 for the AVX and AVX-512 state) runs. */
static inline int hpr_isa_cpu(void) {
    __builtin_cpu_init();
    int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
             __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("f16c");
    int v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512cd");
    return v4 ? HPR_ISA_AVX512 : v3 ? HPR_ISA_AVX2 : HPR_ISA_BASELINE;
}
#else
#define HPR_ISA_VARIANTS 0
static inline int hpr_isa_cpu(void) { return HPR_ISA_BASELINE; }
#endif
#endif
