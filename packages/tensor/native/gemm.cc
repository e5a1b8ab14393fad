// patchflow cpu: packed, blocked SGEMM with an AVX-512 / AVX2 FMA micro-kernel (scalar fallback);
// declared in gemm.h. Compiled once per ISA variant (isa.h): the micro-kernel follows the variant's flags.
//
// C[M,N] (+)= op(A)[M,K] * op(B)[K,N], with op(A)(i,p) = ta ? A[p*lda+i] : A[i*lda+p] and
// op(B)(p,j) = tb ? B[j*ldb+p] : B[p*ldb+j]. Both operands are packed into contiguous micro-panels
// (the packing absorbs the transposes, so all four layouts run the same micro-kernel).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gemm.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define PF_SIMD "avx512"
#define PF_MR 8
#define PF_NR 32
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define PF_SIMD "avx2"
#define PF_MR 6
#define PF_NR 16
#else
// portable: 128-bit GCC/Clang vector extensions (SSE2 on the x86-64 baseline, NEON on arm64), the
// accumulators in registers: 4 x 8 (8 of x86-64's 16 xmm registers) or 8 x 8 on arm64 (16 of 32)
#define PF_SIMD "scalar"
#if defined(__aarch64__)
#include <arm_neon.h>
#define PF_MR 8
#else
#define PF_MR 4
#endif
#define PF_NR 8
#endif

namespace pf {
namespace PF_NS {

constexpr int MR = PF_MR;
constexpr int NR = PF_NR;
constexpr int KC = 256;
constexpr int MC = 128;  // multiple of MR (8, 4) -- rounded below for MR = 6
constexpr int NC = 1024; // multiple of NR

// Packs op(A)[i0:i0+mc, p0:p0+kc] into panels of MR rows: out[panel][p][MR], zero padded.
static inline void pack_a(const float* A, long lda, bool ta, int i0, int mc, int p0, int kc, float* out) {
  for (int ir = 0; ir < mc; ir += MR) {
    const int mr = mc - ir < MR ? mc - ir : MR;
    float* o = out + (size_t)ir * kc;
    if (ta) {  // op(A)(i,p) = A[p*lda + i]: rows of MR contiguous
      for (int p = 0; p < kc; p++) {
        const float* src = A + (size_t)(p0 + p) * lda + i0 + ir;
        int r = 0;
        for (; r < mr; r++) o[p * MR + r] = src[r];
        for (; r < MR; r++) o[p * MR + r] = 0.f;
      }
    } else {  // A[i*lda + p]
      for (int r = 0; r < mr; r++) {
        const float* src = A + (size_t)(i0 + ir + r) * lda + p0;
        for (int p = 0; p < kc; p++) o[p * MR + r] = src[p];
      }
      for (int r = mr; r < MR; r++)
        for (int p = 0; p < kc; p++) o[p * MR + r] = 0.f;
    }
  }
}

// Packs op(B)[p0:p0+kc, j0:j0+nc] into panels of NR columns: out[panel][p][NR], zero padded.
static inline void pack_b(const float* B, long ldb, bool tb, int p0, int kc, int j0, int nc, float* out) {
  for (int jr = 0; jr < nc; jr += NR) {
    const int nr = nc - jr < NR ? nc - jr : NR;
    float* o = out + (size_t)jr * kc;
    if (!tb) {  // B[p*ldb + j]: NR contiguous
      for (int p = 0; p < kc; p++) {
        const float* src = B + (size_t)(p0 + p) * ldb + j0 + jr;
        if (nr == NR) {
          std::memcpy(o + p * NR, src, sizeof(float) * NR);
        } else {
          int c = 0;
          for (; c < nr; c++) o[p * NR + c] = src[c];
          for (; c < NR; c++) o[p * NR + c] = 0.f;
        }
      }
    } else {  // op(B)(p,j) = B[j*ldb + p]
      for (int c = 0; c < nr; c++) {
        const float* src = B + (size_t)(j0 + jr + c) * ldb + p0;
        for (int p = 0; p < kc; p++) o[p * NR + c] = src[p];
      }
      for (int c = nr; c < NR; c++)
        for (int p = 0; p < kc; p++) o[p * NR + c] = 0.f;
    }
  }
}

// acc[MR][NR] = sum_p a[p][:] x b[p][:]; then C (ldc) = acc (+ C if accumulate), only mr x nr valid.
static inline void micro_kernel(int kc, const float* __restrict a, const float* __restrict b, float* C, long ldc, int mr,
                                int nr, bool accumulate) {
#if defined(__AVX512F__)
  __m512 c0[MR], c1[MR];
  for (int r = 0; r < MR; r++) { c0[r] = _mm512_setzero_ps(); c1[r] = _mm512_setzero_ps(); }
  for (int p = 0; p < kc; p++) {
    const __m512 b0 = _mm512_loadu_ps(b + p * NR);
    const __m512 b1 = _mm512_loadu_ps(b + p * NR + 16);
    const float* ap = a + p * MR;
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      const __m512 av = _mm512_set1_ps(ap[r]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
  }
  if (mr == MR && nr == NR) {
    for (int r = 0; r < MR; r++) {
      float* cr = C + r * ldc;
      if (accumulate) {
        c0[r] = _mm512_add_ps(c0[r], _mm512_loadu_ps(cr));
        c1[r] = _mm512_add_ps(c1[r], _mm512_loadu_ps(cr + 16));
      }
      _mm512_storeu_ps(cr, c0[r]);
      _mm512_storeu_ps(cr + 16, c1[r]);
    }
    return;
  }
  // partial tile: masked loads/stores
  const __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
  const __mmask16 m1 = nr <= 16 ? (__mmask16)0 : nr >= 32 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nr - 16)) - 1);
  for (int r = 0; r < mr; r++) {
    float* cr = C + r * ldc;
    if (accumulate) {
      c0[r] = _mm512_add_ps(c0[r], _mm512_maskz_loadu_ps(m0, cr));
      c1[r] = _mm512_add_ps(c1[r], _mm512_maskz_loadu_ps(m1, cr + 16));
    }
    _mm512_mask_storeu_ps(cr, m0, c0[r]);
    _mm512_mask_storeu_ps(cr + 16, m1, c1[r]);
  }
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 c0[MR], c1[MR];
  for (int r = 0; r < MR; r++) { c0[r] = _mm256_setzero_ps(); c1[r] = _mm256_setzero_ps(); }
  for (int p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_loadu_ps(b + p * NR);
    const __m256 b1 = _mm256_loadu_ps(b + p * NR + 8);
    const float* ap = a + p * MR;
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
      const __m256 av = _mm256_broadcast_ss(ap + r);
      c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
    }
  }
  if (mr == MR && nr == NR) {
    for (int r = 0; r < MR; r++) {
      float* cr = C + r * ldc;
      if (accumulate) {
        c0[r] = _mm256_add_ps(c0[r], _mm256_loadu_ps(cr));
        c1[r] = _mm256_add_ps(c1[r], _mm256_loadu_ps(cr + 8));
      }
      _mm256_storeu_ps(cr, c0[r]);
      _mm256_storeu_ps(cr + 8, c1[r]);
    }
    return;
  }
  alignas(32) float tile[MR * NR];
  for (int r = 0; r < MR; r++) { _mm256_store_ps(tile + r * NR, c0[r]); _mm256_store_ps(tile + r * NR + 8, c1[r]); }
  for (int r = 0; r < mr; r++)
    for (int c = 0; c < nr; c++) C[r * ldc + c] = (accumulate ? C[r * ldc + c] : 0.f) + tile[r * NR + c];
#else
#if defined(__aarch64__)
  typedef float32x4_t v4;  // NEON; fused multiply-add below
#else
  typedef float v4 __attribute__((vector_size(16)));
#endif
  constexpr int NV = NR / 4;
  v4 c[MR][NV];
  for (int r = 0; r < MR; r++)
    for (int v = 0; v < NV; v++) c[r][v] = v4{0.f, 0.f, 0.f, 0.f};
  for (int p = 0; p < kc; p++) {
    v4 bv[NV];
    std::memcpy(bv, b + p * NR, sizeof bv);
    const float* ap = a + p * MR;
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
#if defined(__aarch64__)
      for (int v = 0; v < NV; v++) c[r][v] = vfmaq_n_f32(c[r][v], bv[v], ap[r]);
#else
      const v4 av = {ap[r], ap[r], ap[r], ap[r]};
      for (int v = 0; v < NV; v++) c[r][v] += av * bv[v];
#endif
    }
  }
  if (mr == MR && nr == NR) {
    for (int r = 0; r < MR; r++) {
      float* cr = C + r * ldc;
      if (accumulate) {
        v4 old[NV];
        std::memcpy(old, cr, sizeof old);
        for (int v = 0; v < NV; v++) c[r][v] += old[v];
      }
      std::memcpy(cr, c[r], sizeof c[r]);
    }
    return;
  }
  float tile[MR * NR];
  std::memcpy(tile, c, sizeof tile);
  for (int r = 0; r < mr; r++)
    for (int col = 0; col < nr; col++) C[r * ldc + col] = (accumulate ? C[r * ldc + col] : 0.f) + tile[r * NR + col];
#endif
}

struct PackBuffers {
  std::vector<float> a, b;
  PackBuffers() : a((size_t)(MC / MR * MR + MR) * KC), b((size_t)NC * KC) {}
};

static inline PackBuffers& thread_buffers() {
  thread_local PackBuffers buf;
  return buf;
}

// Single-threaded GEMM (called from inside parallel regions). accumulate: C += AB, else C = AB.
void gemm_st(int M, int N, int K, const float* A, long lda, bool ta, const float* B, long ldb, bool tb, float* C,
             long ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int i = 0; i < M; i++) std::memset(C + (size_t)i * ldc, 0, sizeof(float) * N);
    return;
  }
  constexpr int mcb = MC / MR * MR;
  PackBuffers& buf = thread_buffers();
  float* pa = buf.a.data();
  float* pb = buf.b.data();
  for (int jc = 0; jc < N; jc += NC) {
    const int nc = N - jc < NC ? N - jc : NC;
    for (int pc = 0; pc < K; pc += KC) {
      const int kc = K - pc < KC ? K - pc : KC;
      const bool acc = accumulate || pc > 0;
      pack_b(B, ldb, tb, pc, kc, jc, nc, pb);
      for (int ic = 0; ic < M; ic += mcb) {
        const int mc = M - ic < mcb ? M - ic : mcb;
        pack_a(A, lda, ta, ic, mc, pc, kc, pa);
        for (int jr = 0; jr < nc; jr += NR) {
          const int nr = nc - jr < NR ? nc - jr : NR;
          for (int ir = 0; ir < mc; ir += MR) {
            const int mr = mc - ir < MR ? mc - ir : MR;
            micro_kernel(kc, pa + (size_t)ir * kc, pb + (size_t)jr * kc, C + (size_t)(ic + ir) * ldc + jc + jr, ldc, mr,
                         nr, acc);
          }
        }
      }
    }
  }
}

int gemm_mr() { return MR; }
int gemm_nr() { return NR; }
const char* simd_level() { return PF_SIMD; }

}  // namespace PF_NS
}  // namespace pf
