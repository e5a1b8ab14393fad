// patchflow cpu: SIMD math helpers shared by the kernel files of one ISA variant (isa.h): a
// branch-free exp and tanh (scalar, vectorisable under `omp simd`, and 16-lane AVX-512 versions),
// and a fused exp-and-sum over a row. All `static inline`: every kernel file gets its own copy,
// compiled for its own variant.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "isa.h"

namespace pf {
namespace PF_NS {

static inline float fexp(float x) {
  // e^x = 2^k * e^r, r in [-ln2/2, ln2/2]; x <= -87.7 gives 0, x >= 88 saturates near FLT_MAX.
  x = std::min(std::max(x, -88.0f), 88.0f);  // NaN stays NaN, as with the comparisons
  const float t = x * 1.44269504088896341f + 0.5f;
#if defined(__SSE4_1__) || !defined(__x86_64__)
  const float k = std::floor(t);  // one instruction (roundps, frintm), vectorised
  const int32_t ki = (int32_t)k;
#else
  // SSE2 has no vector floor: truncate and correct (|t| < 128), which vectorises
  int32_t ki = (int32_t)t;
  ki -= (float)ki > t ? 1 : 0;
  const float k = (float)ki;
#endif
  const float r = x - k * 0.693145751953125f - k * 1.428606765330187045e-06f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (ki + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);  // (GCC 12 does not vectorise __builtin_bit_cast)
  return p * scale;
}

static inline float ftanh(float u) {
  // 1 - 2/(e^{2u}+1): exact limits at +-inf, abs error ~1e-7
  return 1.0f - 2.0f / (fexp(2.0f * u) + 1.0f);
}

#if defined(__AVX512F__)
static inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-88.0f));
  const __m512 k = _mm512_roundscale_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
                                        _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i ki = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(ki));
}
static inline __m512 tanh16(__m512 u) {
  const __m512 e = exp16(_mm512_add_ps(u, u));
  return _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
}
#endif

// y[j] = mul * exp(x[j] * scale - shift) (y may alias x, or be null); returns sum_j exp(x[j] * scale - shift).
static inline float vexp(const float* x, float* y, long n, float scale, float shift, float mul) {
  long j = 0;
  float sum = 0.f;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  const __m512 vs = _mm512_set1_ps(scale), vsh = _mm512_set1_ps(shift), vm = _mm512_set1_ps(mul);
  for (; j + 16 <= n; j += 16) {
    const __m512 e = exp16(_mm512_fmsub_ps(_mm512_loadu_ps(x + j), vs, vsh));
    acc = _mm512_add_ps(acc, e);
    if (y) _mm512_storeu_ps(y + j, _mm512_mul_ps(e, vm));
  }
  if (j < n) {
    const __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
    const __m512 e = exp16(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, x + j), vs, vsh));
    acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
    if (y) _mm512_mask_storeu_ps(y + j, m, _mm512_mul_ps(e, vm));
    j = n;
  }
  sum = _mm512_reduce_add_ps(acc);
#endif
  // the rest (all of it without AVX-512), vectorised by the compiler
  if (y) {
#pragma omp simd reduction(+ : sum)
    for (long k = j; k < n; k++) {
      const float e = fexp(x[k] * scale - shift);
      sum += e;
      y[k] = mul * e;
    }
  } else {
#pragma omp simd reduction(+ : sum)
    for (long k = j; k < n; k++) sum += fexp(x[k] * scale - shift);
  }
  return sum;
}

constexpr float GELU_C = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float GELU_A = 0.044715f;

}  // namespace PF_NS
}  // namespace pf
