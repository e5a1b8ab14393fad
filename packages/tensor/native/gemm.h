// patchflow cpu: packed SGEMM (gemm.cc), the building block of matmul.cc, the attention kernels and
// (by the same scheme) blocksparse.cc.
//
// C[M,N] (+)= op(A)[M,K] * op(B)[K,N], with op(A)(i,p) = ta ? A[p*lda+i] : A[i*lda+p] and
// op(B)(p,j) = tb ? B[j*ldb+p] : B[p*ldb+j].
#pragma once
#include "isa.h"

namespace pf {
namespace PF_NS {

// Single-threaded (callers parallelise; called from inside parallel regions). accumulate: C += AB,
// else C = AB.
void gemm_st(int M, int N, int K, const float* A, long lda, bool ta, const float* B, long ldb, bool tb, float* C,
             long ldc, bool accumulate);

// The micro-kernel's register tile (rows x columns): callers tile their work in multiples of it.
int gemm_mr();
int gemm_nr();

// The SIMD path the micro-kernel was compiled with: "avx512" (8x32 tile), "avx2" (6x16) or "scalar" (4x16).
const char* simd_level();

}  // namespace PF_NS
}  // namespace pf
