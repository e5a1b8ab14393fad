// patchflow cpu: batched matmul with tfjs BatchMatMul semantics (batch index bi uses A[bi % batchA],
// B[bi % batchB]) plus an optional fused epilogue (_FusedMatMul): bias over the last axis, then an
// activation. The work is tiled over C and run on gemm_st (gemm.cc), one tile per task.
// Compiled once per ISA variant (isa.h).
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "gemm.h"
#include "kernels.h"

namespace pf {
namespace PF_NS {

static void epilogue(float* C, long ldc, int rows, int cols, int col0, const float* bias, int act, float alpha) {
  if (!bias && act == ACT_LINEAR) return;
  for (int i = 0; i < rows; i++) {
    float* c = C + (size_t)i * ldc;
    if (bias) {
      const float* bb = bias + col0;
#pragma omp simd
      for (int j = 0; j < cols; j++) c[j] += bb[j];
    }
    switch (act) {
      case ACT_RELU:
#pragma omp simd
        for (int j = 0; j < cols; j++) c[j] = c[j] > 0.f ? c[j] : 0.f;
        break;
      case ACT_RELU6:
#pragma omp simd
        for (int j = 0; j < cols; j++) c[j] = std::min(std::max(c[j], 0.f), 6.f);
        break;
      case ACT_LEAKY:
#pragma omp simd
        for (int j = 0; j < cols; j++) c[j] = c[j] > 0.f ? c[j] : alpha * c[j];
        break;
      case ACT_ELU:
        for (int j = 0; j < cols; j++) c[j] = c[j] > 0.f ? c[j] : std::expm1(c[j]);
        break;
      case ACT_SIGMOID:
        for (int j = 0; j < cols; j++) c[j] = 1.f / (1.f + std::exp(-c[j]));
        break;
      default:
        break;
    }
  }
}

void matmul(int batch, int batchA, int batchB, int M, int N, int K, bool ta, bool tb, const float* A,
            const float* B, float* C, const float* bias, int act, float alpha) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  const long lda = ta ? M : K, ldb = tb ? K : N;
  const size_t sa = (size_t)M * K, sb = (size_t)K * N, sc = (size_t)M * N;
  // Tile C so that there are at least `threads` independent tasks, each as large as possible.
  const int nt = max_threads();
  const int MR = gemm_mr(), NR = gemm_nr();
  int tm = M, tn = N;
  auto count = [&](int a, int b) { return (long)batch * ((M + a - 1) / a) * ((N + b - 1) / b); };
  while (count(tm, tn) < nt) {
    if (tm >= tn && tm > MR) tm = ((tm + 1) / 2 + MR - 1) / MR * MR;
    else if (tn > NR) tn = ((tn + 1) / 2 + NR - 1) / NR * NR;
    else if (tm > MR) tm = ((tm + 1) / 2 + MR - 1) / MR * MR;
    else break;
  }
  const int ntm = (M + tm - 1) / tm, ntn = (N + tn - 1) / tn;
  const long tasks = (long)batch * ntm * ntn;
  const double flops = 2.0 * batch * M * N * (double)K;
  const int use = flops < 2e5 ? 1 : nt;
#pragma omp parallel for schedule(dynamic, 1) num_threads(use) if (use > 1)
  for (long t = 0; t < tasks; t++) {
    const int bi = (int)(t / ((long)ntm * ntn));
    const int r = (int)(t % ((long)ntm * ntn));
    const int i0 = (r / ntn) * tm, j0 = (r % ntn) * tn;
    const int mi = std::min(tm, M - i0), nj = std::min(tn, N - j0);
    const float* a = A + (size_t)(bi % batchA) * sa + (ta ? (size_t)i0 : (size_t)i0 * lda);
    const float* b = B + (size_t)(bi % batchB) * sb + (tb ? (size_t)j0 * ldb : (size_t)j0);
    float* c = C + (size_t)bi * sc + (size_t)i0 * N + j0;
    gemm_st(mi, nj, K, a, lda, ta, b, ldb, tb, c, N, false);
    epilogue(c, N, mi, nj, j0, bias, act, alpha);
  }
}

}  // namespace PF_NS
}  // namespace pf
