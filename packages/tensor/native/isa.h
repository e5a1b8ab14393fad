// patchflow cpu: which instruction-set variant a kernel translation unit is compiled as.
//
// One binary serves every x86-64 CPU: scripts/build-native.mjs compiles each kernel file (kernels.cc,
// tensor_ops.cc, matmul.cc, gemm.cc, blocksparse.cc, table.cc) once per variant, with
// -DPF_ISA=<variant> and that variant's compiler flags:
//
//   scalar   the target's baseline (x86-64: SSE2; arm64: armv8-a, NEON)
//   avx2     -mavx2 -mfma
//   avx512   -mavx512f -mavx512vl -mavx512bw -mavx512dq -mavx2 -mfma (-mtune=icelake-server,
//            -mprefer-vector-width=512)
//
// The code picks its SIMD paths from the compiler's predefined macros (__AVX512F__, __AVX2__, __FMA__),
// so the same source gives each variant. Every variant lives in its own namespace, pf::<variant>, and
// exports one table of entry points (kernel_table.h); dispatch.cc picks a table when the addon loads.
//
// Rules that keep the variants apart in one binary:
//  - everything a kernel file defines is in namespace pf::PF_ISA (PF_NS below), or has internal linkage;
//  - helpers in headers that kernel files share are `static inline` (internal linkage), never plain
//    `inline`: an inline function with external linkage compiled for avx512 could be the one copy the
//    linker keeps, and run on a CPU without AVX-512;
//  - the only symbols with external linkage that variants share are template instantiations from the
//    C++ standard library (std::vector<float>, ...). The build links the baseline objects first, so the
//    linker keeps their baseline copies, and `build-native.mjs --check` verifies in the linked binary that
//    no function outside pf::avx2 / pf::avx512 uses an AVX instruction.
#pragma once

#ifndef PF_ISA
#error "kernel sources are compiled once per ISA variant with -DPF_ISA=<variant> (see scripts/build-native.mjs)"
#endif

#define PF_NS PF_ISA
