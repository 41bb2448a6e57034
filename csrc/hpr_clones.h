/* Shared by hpr's C kernels: how a kernel is compiled for the machine it runs on. Each HPR_KERNEL
 * function is compiled three times, for AVX-512, AVX2+FMA and baseline x86-64, and the loader picks
 * the widest the CPU has (GCC's target_clones over glibc's ifunc): wheels stay portable and the loops
 * still use the machine's full vector width. Other compilers and CPUs: one build. */
#ifndef HPR_CLONES_H
#define HPR_CLONES_H
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 12 && !defined(HPR_NO_CLONES)
#define HPR_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HPR_KERNEL
#endif
#endif
