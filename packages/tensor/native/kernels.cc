// patchflow cpu: the math kernels of the fused ops and the optimiser: GELU, LayerNorm, softmax,
// cross-entropy, causal attention (forward and gradient each) and AdamW. Compiled once per ISA
// variant (isa.h); bindings.cc reaches them through the kernel table.
//
// Every function works in place on arrays the caller owns (inputs and preallocated outputs), so
// nothing is copied. Threads: OpenMP, pf::g_threads (PATCHFLOW_THREADS, default: all cores).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "gemm.h"
#include "kernels.h"
#include "simd_math.h"

namespace pf {
namespace PF_NS {

// ---------------------------------------------------------------------------------------------
// elementwise / row ops

static void gelu_fwd_chunk(const float* __restrict x, float* __restrict y, long n) {
  long i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m512 inner = _mm512_mul_ps(_mm512_set1_ps(GELU_C), _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(GELU_A), v), _mm512_mul_ps(v, v), v));
    const __m512 t = tanh16(inner);
    _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(_mm512_set1_ps(1.0f), t)));
  }
#endif
  // the rest (all of it without AVX-512): fexp is branch-free, so this vectorises too
#pragma omp simd
  for (long k = i; k < n; k++) {
    const float v = x[k];
    const float t = ftanh(GELU_C * (v + GELU_A * v * v * v));
    y[k] = 0.5f * v * (1.0f + t);
  }
}

static void gelu_bwd_chunk(const float* __restrict x, const float* __restrict dy, float* __restrict dx, long n) {
  long i = 0;
#if defined(__AVX512F__)
  const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m512 v2 = _mm512_mul_ps(v, v);
    const __m512 inner = _mm512_mul_ps(_mm512_set1_ps(GELU_C), _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(GELU_A), v), v2, v));
    const __m512 t = tanh16(inner);
    const __m512 dt = _mm512_mul_ps(_mm512_fnmadd_ps(t, t, one),
                                    _mm512_mul_ps(_mm512_set1_ps(GELU_C), _mm512_fmadd_ps(_mm512_set1_ps(3.0f * GELU_A), v2, one)));
    const __m512 g = _mm512_fmadd_ps(_mm512_mul_ps(half, v), dt, _mm512_mul_ps(half, _mm512_add_ps(one, t)));
    _mm512_storeu_ps(dx + i, _mm512_mul_ps(_mm512_loadu_ps(dy + i), g));
  }
#endif
  // the rest (all of it without AVX-512): fexp is branch-free, so this vectorises too
#pragma omp simd
  for (long k = i; k < n; k++) {
    const float v = x[k];
    const float t = ftanh(GELU_C * (v + GELU_A * v * v * v));
    const float dt = (1.0f - t * t) * GELU_C * (1.0f + 3.0f * GELU_A * v * v);
    dx[k] = dy[k] * (0.5f * (1.0f + t) + 0.5f * v * dt);
  }
}

constexpr long EW_CHUNK = 16384;

// One AdamW update in a single pass (see ops.ts adamwUpdate): g' = g*scale; m' = b1 m + (1-b1) g';
// v' = b2 v + (1-b2) g'^2; w' = w*decay - stepSize * m' / (sqrt(v'/bc2) + eps).
void adamw_update(const float* w, const float* g, const float* m, const float* v, long n, float scale, float b1,
                  float b2, float eps, float decay, float stepSize, float bc2, float* wo, float* mo, float* vo) {
  const float ib2 = 1.0f / bc2;
  const long nch = (n + EW_CHUNK - 1) / EW_CHUNK;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (long c = 0; c < nch; c++) {
    const long i0 = c * EW_CHUNK, i1 = std::min(n, i0 + EW_CHUNK);
#pragma omp simd
    for (long i = i0; i < i1; i++) {
      const float gi = g[i] * scale;
      const float mi = b1 * m[i] + (1.0f - b1) * gi;
      const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
      mo[i] = mi;
      vo[i] = vi;
      wo[i] = w[i] * decay - stepSize * (mi / (std::sqrt(vi * ib2) + eps));
    }
  }
}

void gelu_fwd(const float* x, float* y, long n) {
  const long nch = (n + EW_CHUNK - 1) / EW_CHUNK;
#pragma omp parallel for schedule(static) if (n > 32768)
  for (long c = 0; c < nch; c++) gelu_fwd_chunk(x + c * EW_CHUNK, y + c * EW_CHUNK, std::min(EW_CHUNK, n - c * EW_CHUNK));
}

void gelu_bwd(const float* x, const float* dy, float* dx, long n) {
  const long nch = (n + EW_CHUNK - 1) / EW_CHUNK;
#pragma omp parallel for schedule(static) if (n > 32768)
  for (long c = 0; c < nch; c++)
    gelu_bwd_chunk(x + c * EW_CHUNK, dy + c * EW_CHUNK, dx + c * EW_CHUNK, std::min(EW_CHUNK, n - c * EW_CHUNK));
}

void layernorm_fwd(const float* x, const float* g, const float* b, float eps, long rows, int C, float* y,
                   float* mean, float* rstd) {
#pragma omp parallel for schedule(static) if (rows * C > 16384)
  for (long r = 0; r < rows; r++) {
    const float* xr = x + (size_t)r * C;
    float* yr = y + (size_t)r * C;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; c++) s += xr[c];
    const float mu = s / C;
    float v = 0.f;
#pragma omp simd reduction(+ : v)
    for (int c = 0; c < C; c++) v += (xr[c] - mu) * (xr[c] - mu);
    const float rs = 1.0f / std::sqrt(v / C + eps);
    mean[r] = mu;
    rstd[r] = rs;
#pragma omp simd
    for (int c = 0; c < C; c++) yr[c] = (xr[c] - mu) * rs * g[c] + b[c];
  }
}

void layernorm_bwd(const float* dy, const float* x, const float* g, const float* mean, const float* rstd,
                   long rows, int C, float* dx, float* dg, float* db) {
  const int nt = rows * C > 16384 ? max_threads() : 1;
  std::vector<float> part((size_t)nt * 2 * C, 0.f);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    float* pg = part.data() + (size_t)tid * 2 * C;
    float* pb = pg + C;
#pragma omp for schedule(static)
    for (long r = 0; r < rows; r++) {
      const float* xr = x + (size_t)r * C;
      const float* dr = dy + (size_t)r * C;
      float* o = dx + (size_t)r * C;
      const float mu = mean[r], rs = rstd[r];
      float s1 = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s1, s2)
      for (int c = 0; c < C; c++) {
        const float xh = (xr[c] - mu) * rs;
        const float gd = dr[c] * g[c];
        s1 += gd;
        s2 += gd * xh;
        pg[c] += dr[c] * xh;
        pb[c] += dr[c];
      }
      s1 /= C;
      s2 /= C;
#pragma omp simd
      for (int c = 0; c < C; c++) {
        const float xh = (xr[c] - mu) * rs;
        o[c] = rs * (dr[c] * g[c] - s1 - xh * s2);
      }
    }
  }
  for (int c = 0; c < C; c++) {
    float sg = 0.f, sb = 0.f;
    for (int t = 0; t < nt; t++) {
      sg += part[(size_t)t * 2 * C + c];
      sb += part[(size_t)t * 2 * C + C + c];
    }
    dg[c] = sg;
    db[c] = sb;
  }
}

// row softmax over the last axis (tfjs Softmax kernel: logits, dim = -1)
void softmax_rows(const float* x, float* y, long rows, int C) {
#pragma omp parallel for schedule(static) if (rows * C > 16384)
  for (long r = 0; r < rows; r++) {
    const float* xr = x + (size_t)r * C;
    float* yr = y + (size_t)r * C;
    float m = -INFINITY;
    for (int c = 0; c < C; c++) m = std::max(m, xr[c]);
    const float s = vexp(xr, yr, C, 1.0f, m, 1.0f);
    const float inv = 1.0f / s;
#pragma omp simd
    for (int c = 0; c < C; c++) yr[c] *= inv;
  }
}

// ---------------------------------------------------------------------------------------------
// cross-entropy with K labels per row

void xent_fwd(const float* logits, const int32_t* labels, long N, int V, int K, float* loss, float* lse) {
#pragma omp parallel for schedule(static) if (N * V > 16384)
  for (long n = 0; n < N; n++) {
    const float* x = logits + (size_t)n * V;
    float m = -INFINITY;
    for (int v = 0; v < V; v++) m = std::max(m, x[v]);
    const float s = vexp(x, nullptr, V, 1.0f, m, 1.0f);
    const float l = m + std::log(s);
    lse[n] = l;
    float acc = 0.f;
    for (int k = 0; k < K; k++) {
      const int32_t y = labels[(size_t)n * K + k];
      if (y >= 0 && y < V) acc += l - x[y];  // an out-of-range label contributes 0, like oneHot
    }
    loss[n] = acc / K;
  }
}

void xent_bwd(const float* logits, const int32_t* labels, const float* lse, const float* dy, long N, int V,
              int K, float* dlogits) {
#pragma omp parallel for schedule(static) if (N * V > 16384)
  for (long n = 0; n < N; n++) {
    const float* x = logits + (size_t)n * V;
    float* o = dlogits + (size_t)n * V;
    const float l = lse[n], g = dy[n];
    int valid = 0;
    for (int k = 0; k < K; k++) {
      const int32_t y = labels[(size_t)n * K + k];
      valid += (y >= 0 && y < V);
    }
    // d loss / d logit = (valid/K) * softmax - (1/K) * sum_k onehot(y_k)
    const float w = g * (float)valid / (float)K;
    vexp(x, o, V, 1.0f, l, w);
    for (int k = 0; k < K; k++) {
      const int32_t y = labels[(size_t)n * K + k];
      if (y >= 0 && y < V) o[y] -= g / K;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// causal attention, flash-style: per (head, block of BM query rows) a BM x T score scratch per
// thread; T x T is never formed.

constexpr int ATT_BM = 64;

void attn_fwd(const float* q, const float* k, const float* v, long BH, int T, int D, float scale, float* out,
              float* lse) {
  const int nblk = (T + ATT_BM - 1) / ATT_BM;
  const long tasks = BH * nblk;
  const size_t hs = (size_t)T * D;
#pragma omp parallel num_threads(max_threads()) if (tasks > 1 && (double)BH * T * T * D > 1e5)
  {
    std::vector<float> S((size_t)ATT_BM * T);
#pragma omp for schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {
      const long bh = task / nblk;
      // largest blocks first (they have the most keys): reverse block order
      const int blk = nblk - 1 - (int)(task % nblk);
      const int i0 = blk * ATT_BM, bm = std::min(ATT_BM, T - i0), n = i0 + bm;
      const float* qh = q + bh * hs;
      const float* kh = k + bh * hs;
      const float* vh = v + bh * hs;
      gemm_st(bm, n, D, qh + (size_t)i0 * D, D, false, kh, D, true, S.data(), T, false);
      for (int r = 0; r < bm; r++) {
        float* s = S.data() + (size_t)r * T;
        const int nv = i0 + r + 1;  // keys 0..i
        float m = -INFINITY;
        for (int j = 0; j < nv; j++) m = std::max(m, s[j]);
        m *= scale;  // scale > 0
        const float sum = vexp(s, s, nv, scale, m, 1.0f);
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int j = 0; j < nv; j++) s[j] *= inv;
        for (int j = nv; j < n; j++) s[j] = 0.f;
        lse[bh * T + i0 + r] = m + std::log(sum);
      }
      gemm_st(bm, D, n, S.data(), T, false, vh, D, false, out + bh * hs + (size_t)i0 * D, D, false);
    }
  }
}

void attn_bwd(const float* q, const float* k, const float* v, const float* out, const float* lse,
              const float* dout, long BH, int T, int D, float scale, float* dq, float* dk, float* dv) {
  const int nblk = (T + ATT_BM - 1) / ATT_BM;
  const size_t hs = (size_t)T * D;
#pragma omp parallel num_threads(max_threads()) if (BH > 1 && (double)BH * T * T * D > 1e5)
  {
    std::vector<float> P((size_t)ATT_BM * T), dP((size_t)ATT_BM * T), Di(ATT_BM);
#pragma omp for schedule(dynamic, 1)
    for (long bh = 0; bh < BH; bh++) {
      const float* qh = q + bh * hs;
      const float* kh = k + bh * hs;
      const float* vh = v + bh * hs;
      const float* oh = out + bh * hs;
      const float* doh = dout + bh * hs;
      float* dqh = dq + bh * hs;
      float* dkh = dk + bh * hs;
      float* dvh = dv + bh * hs;
      std::memset(dkh, 0, sizeof(float) * hs);
      std::memset(dvh, 0, sizeof(float) * hs);
      for (int blk = 0; blk < nblk; blk++) {
        const int i0 = blk * ATT_BM, bm = std::min(ATT_BM, T - i0), n = i0 + bm;
        gemm_st(bm, n, D, qh + (size_t)i0 * D, D, false, kh, D, true, P.data(), T, false);
        gemm_st(bm, n, D, doh + (size_t)i0 * D, D, false, vh, D, true, dP.data(), T, false);
        for (int r = 0; r < bm; r++) {
          const int i = i0 + r, nv = i + 1;
          const float* o = oh + (size_t)i * D;
          const float* g = doh + (size_t)i * D;
          float di = 0.f;
#pragma omp simd reduction(+ : di)
          for (int d = 0; d < D; d++) di += o[d] * g[d];
          const float l = lse[bh * T + i];
          float* p = P.data() + (size_t)r * T;
          float* dp = dP.data() + (size_t)r * T;
          vexp(p, p, nv, scale, l, 1.0f);
#pragma omp simd
          for (int j = 0; j < nv; j++) dp[j] = p[j] * (dp[j] - di) * scale;
          for (int j = nv; j < n; j++) {
            p[j] = 0.f;
            dp[j] = 0.f;
          }
        }
        // dQ = dS K ; dK += dS^T Q ; dV += P^T dO
        gemm_st(bm, D, n, dP.data(), T, false, kh, D, false, dqh + (size_t)i0 * D, D, false);
        gemm_st(n, D, bm, dP.data(), T, true, qh + (size_t)i0 * D, D, false, dkh, D, true);
        gemm_st(n, D, bm, P.data(), T, true, doh + (size_t)i0 * D, D, false, dvh, D, true);
      }
    }
  }
}

}  // namespace PF_NS
}  // namespace pf
