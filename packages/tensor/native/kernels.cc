// patchflow cpu: native kernels for the embedded `cpu` backend (Node-API, plain C interface).
//
// Every function works in place on typed arrays the caller owns (inputs and preallocated outputs),
// so nothing is copied. Shapes arrive as numbers; lengths are checked against them before any
// pointer is touched. Threads: OpenMP, count from PATCHFLOW_THREADS (default: all cores).
#include <node_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
#endif

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "blocksparse.h"

namespace pf {
// gemm.cc: packed SGEMM, C[M,N] (+)= op(A) op(B), single-threaded (callers parallelise).
void gemm_st(int M, int N, int K, const float* A, long lda, bool ta, const float* B, long ldb, bool tb, float* C,
             long ldc, bool accumulate);
int gemm_mr();
int gemm_nr();
const char* simd_level();
}  // namespace pf

namespace pf {

static int g_threads = 1;

static inline int max_threads() { return g_threads; }

// ---------------------------------------------------------------------------------------------
// math helpers (branch-free, vectorisable under `omp simd`)

static inline float fexp(float x) {
  // e^x = 2^k * e^r, r in [-ln2/2, ln2/2]; x <= -87.7 gives 0, x >= 88 saturates near FLT_MAX.
  x = x < -88.0f ? -88.0f : (x > 88.0f ? 88.0f : x);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693145751953125f - k * 1.428606765330187045e-06f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = ((int32_t)k + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
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
  for (; j < n; j++) {
    const float e = fexp(x[j] * scale - shift);
    sum += e;
    if (y) y[j] = mul * e;
  }
  return sum;
}

constexpr float GELU_C = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float GELU_A = 0.044715f;

// ---------------------------------------------------------------------------------------------
// batched matmul with tfjs BatchMatMul semantics (batch index bi uses A[bi % batchA], B[bi % batchB])
// plus an optional fused epilogue: bias over the last axis, then activation.

enum Act { ACT_LINEAR = 0, ACT_RELU = 1, ACT_RELU6 = 2, ACT_LEAKY = 3, ACT_ELU = 4, ACT_SIGMOID = 5 };

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

static void matmul(int batch, int batchA, int batchB, int M, int N, int K, bool ta, bool tb, const float* A,
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
  for (; i < n; i++) {
    const float v = x[i];
    const float t = ftanh(GELU_C * (v + GELU_A * v * v * v));
    y[i] = 0.5f * v * (1.0f + t);
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
  for (; i < n; i++) {
    const float v = x[i];
    const float t = ftanh(GELU_C * (v + GELU_A * v * v * v));
    const float dt = (1.0f - t * t) * GELU_C * (1.0f + 3.0f * GELU_A * v * v);
    dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * dt);
  }
}

constexpr long EW_CHUNK = 16384;

// One AdamW update in a single pass (see ops.ts adamwUpdate): g' = g*scale; m' = b1 m + (1-b1) g';
// v' = b2 v + (1-b2) g'^2; w' = w*decay - stepSize * m' / (sqrt(v'/bc2) + eps).
static void adamw_update(const float* w, const float* g, const float* m, const float* v, long n, float scale, float b1,
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

static void gelu_fwd(const float* x, float* y, long n) {
  const long nch = (n + EW_CHUNK - 1) / EW_CHUNK;
#pragma omp parallel for schedule(static) if (n > 32768)
  for (long c = 0; c < nch; c++) gelu_fwd_chunk(x + c * EW_CHUNK, y + c * EW_CHUNK, std::min(EW_CHUNK, n - c * EW_CHUNK));
}

static void gelu_bwd(const float* x, const float* dy, float* dx, long n) {
  const long nch = (n + EW_CHUNK - 1) / EW_CHUNK;
#pragma omp parallel for schedule(static) if (n > 32768)
  for (long c = 0; c < nch; c++)
    gelu_bwd_chunk(x + c * EW_CHUNK, dy + c * EW_CHUNK, dx + c * EW_CHUNK, std::min(EW_CHUNK, n - c * EW_CHUNK));
}

static void layernorm_fwd(const float* x, const float* g, const float* b, float eps, long rows, int C, float* y,
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

static void layernorm_bwd(const float* dy, const float* x, const float* g, const float* mean, const float* rstd,
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
static void softmax_rows(const float* x, float* y, long rows, int C) {
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

static void xent_fwd(const float* logits, const int32_t* labels, long N, int V, int K, float* loss, float* lse) {
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

static void xent_bwd(const float* logits, const int32_t* labels, const float* lse, const float* dy, long N, int V,
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

static void attn_fwd(const float* q, const float* k, const float* v, long BH, int T, int D, float scale, float* out,
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

static void attn_bwd(const float* q, const float* k, const float* v, const float* out, const float* lse,
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

// ---------------------------------------------------------------------------------------------
// UnsortedSegmentSum (the gradient of the embedding gather): out[ids[i], :] += x[i, :]; ids outside
// [0, numSegments) are dropped, as in TensorFlow. Parallel over column chunks (no write conflicts).

static void segment_sum(const float* x, const int32_t* ids, long S, long inner, long nseg, float* out) {
  std::memset(out, 0, sizeof(float) * (size_t)nseg * inner);
  const long chunk = 256;
  const long nchunks = (inner + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (nchunks > 1 && S * inner > 65536)
  for (long c = 0; c < nchunks; c++) {
    const long c0 = c * chunk, c1 = std::min(inner, c0 + chunk);
    for (long i = 0; i < S; i++) {
      const int32_t s = ids[i];
      if (s < 0 || s >= nseg) continue;
      const float* xr = x + (size_t)i * inner;
      float* o = out + (size_t)s * inner;
#pragma omp simd
      for (long j = c0; j < c1; j++) o[j] += xr[j];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Transpose of a rank <= 8 tensor (4-byte elements). Adjacent axes that stay adjacent are merged
// first; when the last axis stays last, whole rows are copied.

static void transpose4(const uint32_t* x, const long* shape, const int* perm, int rank, uint32_t* out) {
  // merge: output axis j reads input axis perm[j]; consecutive perm[j+1] == perm[j]+1 merge
  long ish[8];
  int p[8];
  int r = 0;
  {
    // new input dims in input order: group input axes by runs that appear consecutively in perm
    long gsize[8];
    int gstart[8];
    int ng = 0;
    for (int j = 0; j < rank; j++) {
      if (j > 0 && perm[j] == perm[j - 1] + 1) {
        gsize[ng - 1] *= shape[perm[j]];
      } else {
        gstart[ng] = perm[j];
        gsize[ng] = shape[perm[j]];
        ng++;
      }
    }
    // order groups by their input start to get the merged input shape
    int order[8];
    for (int g = 0; g < ng; g++) order[g] = g;
    std::sort(order, order + ng, [&](int a, int b) { return gstart[a] < gstart[b]; });
    int pos[8];
    for (int i = 0; i < ng; i++) {
      ish[i] = gsize[order[i]];
      pos[order[i]] = i;
    }
    for (int g = 0; g < ng; g++) p[g] = pos[g];
    r = ng;
  }
  long total = 1;
  for (int i = 0; i < r; i++) total *= ish[i];
  if (total == 0) return;
  long istride[8];
  istride[r - 1] = 1;
  for (int i = r - 2; i >= 0; i--) istride[i] = istride[i + 1] * ish[i + 1];
  long osh[8], ost[8];
  for (int j = 0; j < r; j++) {
    osh[j] = ish[p[j]];
    ost[j] = istride[p[j]];
  }
  const bool rowCopy = p[r - 1] == r - 1;
  const long inner = osh[r - 1];
  const long rows = total / inner;
#pragma omp parallel for schedule(static) if (total > 65536)
  for (long row = 0; row < rows; row++) {
    // decompose row index over output dims 0..r-2
    long rem = row, src = 0;
    for (int j = r - 2; j >= 0; j--) {
      const long idx = rem % osh[j];
      rem /= osh[j];
      src += idx * ost[j];
    }
    uint32_t* o = out + (size_t)row * inner;
    if (rowCopy) {
      std::memcpy(o, x + src, sizeof(uint32_t) * inner);
    } else {
      const long st = ost[r - 1];
      for (long c = 0; c < inner; c++) o[c] = x[src + c * st];
    }
  }
}

// Sum over a contiguous block of axes: x viewed as [outer, red, inner] -> out [outer, inner].
static void reduce_sum(const float* x, long outer, long red, long inner, float* out) {
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * red > 65536 && outer > 1)
    for (long o = 0; o < outer; o++) {
      const float* xr = x + (size_t)o * red;
      double s = 0.0;  // double: long reductions (grad norms) stay accurate
#pragma omp simd reduction(+ : s)
      for (long i = 0; i < red; i++) s += xr[i];
      out[o] = (float)s;
    }
    return;
  }
  const long chunk = 512;
  const long nch = (inner + chunk - 1) / chunk;
#pragma omp parallel for collapse(2) schedule(static) if (outer * red * inner > 65536)
  for (long o = 0; o < outer; o++)
    for (long c = 0; c < nch; c++) {
      const long c0 = c * chunk, c1 = std::min(inner, c0 + chunk);
      float* d = out + (size_t)o * inner;
      for (long j = c0; j < c1; j++) d[j] = 0.f;
      for (long r = 0; r < red; r++) {
        const float* xr = x + ((size_t)o * red + r) * inner;
#pragma omp simd
        for (long j = c0; j < c1; j++) d[j] += xr[j];
      }
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise binary ops with the broadcasts that training uses: `big` has n elements, `small` has
// ns elements (ns divides n; small repeats over the leading dims: same shape, scalar, or a suffix
// such as a bias row). `rev`: small is the left operand.

enum BinOp { OP_ADD = 0, OP_SUB = 1, OP_MUL = 2, OP_DIV = 3 };

template <int OP, bool REV>
static inline void bin_row(const float* a, const float* b, float* o, long n) {
#pragma omp simd
  for (long j = 0; j < n; j++) {
    const float x = REV ? b[j] : a[j], y = REV ? a[j] : b[j];
    o[j] = OP == OP_ADD ? x + y : OP == OP_SUB ? x - y : OP == OP_MUL ? x * y : x / y;
  }
}

template <int OP, bool REV>
static inline void bin_scalar(const float* a, float s, float* o, long n) {
#pragma omp simd
  for (long j = 0; j < n; j++) {
    const float x = REV ? s : a[j], y = REV ? a[j] : s;
    o[j] = OP == OP_ADD ? x + y : OP == OP_SUB ? x - y : OP == OP_MUL ? x * y : x / y;
  }
}

template <int OP, bool REV>
static void binary_t(const float* big, long n, const float* small, long ns, float* out) {
  if (ns == 1) {
    const float s = small[0];
    const long chunk = 16384;
    const long nch = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n > 262144)
    for (long c = 0; c < nch; c++) {
      const long c0 = c * chunk, len = std::min(chunk, n - c0);
      bin_scalar<OP, REV>(big + c0, s, out + c0, len);
    }
    return;
  }
  const long rows = n / ns;
  if (rows == 1) {
    const long chunk = 16384;
    const long nch = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n > 262144)
    for (long c = 0; c < nch; c++) {
      const long c0 = c * chunk, len = std::min(chunk, n - c0);
      bin_row<OP, REV>(big + c0, small + c0, out + c0, len);
    }
    return;
  }
#pragma omp parallel for schedule(static) if (n > 262144)
  for (long r = 0; r < rows; r++) bin_row<OP, REV>(big + (size_t)r * ns, small, out + (size_t)r * ns, ns);
}

static void binary(int op, bool rev, const float* big, long n, const float* small, long ns, float* out) {
  switch (op * 2 + (rev ? 1 : 0)) {
    case 0: binary_t<OP_ADD, false>(big, n, small, ns, out); break;
    case 1: binary_t<OP_ADD, true>(big, n, small, ns, out); break;
    case 2: binary_t<OP_SUB, false>(big, n, small, ns, out); break;
    case 3: binary_t<OP_SUB, true>(big, n, small, ns, out); break;
    case 4: binary_t<OP_MUL, false>(big, n, small, ns, out); break;
    case 5: binary_t<OP_MUL, true>(big, n, small, ns, out); break;
    case 6: binary_t<OP_DIV, false>(big, n, small, ns, out); break;
    case 7: binary_t<OP_DIV, true>(big, n, small, ns, out); break;
    default: throw std::runtime_error("binary: bad op");
  }
}

// ---------------------------------------------------------------------------------------------
// Node-API glue

struct Err : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  napi_env env;
  napi_value v[24];
  size_t n = 24;
  Args(napi_env e, napi_callback_info info, size_t need) : env(e) {
    if (napi_get_cb_info(e, info, &n, v, nullptr, nullptr) != napi_ok) throw Err("bad call");
    if (n < need) throw Err("expected " + std::to_string(need) + " arguments, got " + std::to_string(n));
  }
  bool isNull(size_t i) {
    napi_valuetype t;
    napi_typeof(env, v[i], &t);
    return t == napi_null || t == napi_undefined;
  }
  double num(size_t i) {
    double d;
    if (napi_get_value_double(env, v[i], &d) != napi_ok) throw Err("argument " + std::to_string(i) + " must be a number");
    return d;
  }
  long integer(size_t i) {
    const double d = num(i);
    if (d < 0 || d != std::floor(d)) throw Err("argument " + std::to_string(i) + " must be a non-negative integer");
    return (long)d;
  }
  bool flag(size_t i) { return num(i) != 0; }
  void* typed(size_t i, napi_typedarray_type want, size_t need, const char* what) {
    bool is = false;
    napi_is_typedarray(env, v[i], &is);
    if (!is) throw Err(std::string("argument ") + std::to_string(i) + " must be a " + what);
    napi_typedarray_type t;
    size_t len;
    void* data;
    napi_value ab;
    size_t off;
    napi_get_typedarray_info(env, v[i], &t, &len, &data, &ab, &off);
    if (t != want) throw Err(std::string("argument ") + std::to_string(i) + " must be a " + what);
    if (len < need)
      throw Err(std::string("argument ") + std::to_string(i) + " too short: " + std::to_string(len) + " < " +
                std::to_string(need));
    return data;
  }
  float* f32(size_t i, size_t need) { return (float*)typed(i, napi_float32_array, need, "Float32Array"); }
  int32_t* i32(size_t i, size_t need) { return (int32_t*)typed(i, napi_int32_array, need, "Int32Array"); }
  // any typed array of 4-byte elements (float32, int32, uint32), for kernels that only move bits
  uint32_t* word32(size_t i, size_t need, const char* op) {
    bool is = false;
    napi_is_typedarray(env, v[i], &is);
    if (!is) throw Err(std::string(op) + ": typed array expected");
    napi_typedarray_type t;
    size_t len;
    void* data;
    napi_value ab;
    size_t off;
    napi_get_typedarray_info(env, v[i], &t, &len, &data, &ab, &off);
    if (t != napi_float32_array && t != napi_int32_array && t != napi_uint32_array) throw Err(std::string(op) + ": 4-byte elements expected");
    if (len < need) throw Err(std::string(op) + ": array too short");
    return (uint32_t*)data;
  }
};

template <typename F>
static napi_value guard(napi_env env, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    napi_throw_error(env, "PATCHFLOW_NATIVE", e.what());
  }
  return nullptr;
}

// matmul(A, B, C, batch, batchA, batchB, M, N, K, transA, transB, bias|null, act, alpha)
static napi_value js_matmul(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 14);
    const long batch = a.integer(3), ba = a.integer(4), bb = a.integer(5), M = a.integer(6), N = a.integer(7),
               K = a.integer(8);
    if (ba < 1 || bb < 1 || (batch % ba) || (batch % bb)) throw Err("bad batch sizes");
    const float* A = a.f32(0, (size_t)ba * M * K);
    const float* B = a.f32(1, (size_t)bb * K * N);
    float* C = a.f32(2, (size_t)batch * M * N);
    const float* bias = a.isNull(11) ? nullptr : a.f32(11, (size_t)N);
    matmul((int)batch, (int)ba, (int)bb, (int)M, (int)N, (int)K, a.flag(9), a.flag(10), A, B, C, bias,
           (int)a.integer(12), (float)a.num(13));
  });
}

static napi_value js_gelu(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 3);
    const size_t n = a.integer(2);
    gelu_fwd(a.f32(0, n), a.f32(1, n), n);
  });
}

static napi_value js_gelu_grad(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 4);
    const size_t n = a.integer(3);
    gelu_bwd(a.f32(0, n), a.f32(1, n), a.f32(2, n), n);
  });
}

// layerNorm(x, gamma, beta, rows, C, eps, y, mean, rstd)
static napi_value js_layernorm(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 9);
    const long rows = a.integer(3), C = a.integer(4);
    const size_t n = (size_t)rows * C;
    layernorm_fwd(a.f32(0, n), a.f32(1, C), a.f32(2, C), (float)a.num(5), rows, (int)C, a.f32(6, n), a.f32(7, rows),
                  a.f32(8, rows));
  });
}

// layerNormGrad(dy, x, gamma, mean, rstd, rows, C, dx, dgamma, dbeta)
static napi_value js_layernorm_grad(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 10);
    const long rows = a.integer(5), C = a.integer(6);
    const size_t n = (size_t)rows * C;
    layernorm_bwd(a.f32(0, n), a.f32(1, n), a.f32(2, C), a.f32(3, rows), a.f32(4, rows), rows, (int)C, a.f32(7, n),
                  a.f32(8, C), a.f32(9, C));
  });
}

// softmax(x, y, rows, C)
static napi_value js_softmax(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 4);
    const long rows = a.integer(2), C = a.integer(3);
    softmax_rows(a.f32(0, (size_t)rows * C), a.f32(1, (size_t)rows * C), rows, (int)C);
  });
}

// crossEntropy(logits, labels, N, V, K, loss, lse)
static napi_value js_xent(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 7);
    const long N = a.integer(2), V = a.integer(3), K = a.integer(4);
    if (K < 1) throw Err("K must be >= 1");
    xent_fwd(a.f32(0, (size_t)N * V), a.i32(1, (size_t)N * K), N, (int)V, (int)K, a.f32(5, N), a.f32(6, N));
  });
}

// crossEntropyGrad(logits, labels, lse, dy, N, V, K, dlogits)
static napi_value js_xent_grad(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 8);
    const long N = a.integer(4), V = a.integer(5), K = a.integer(6);
    if (K < 1) throw Err("K must be >= 1");
    xent_bwd(a.f32(0, (size_t)N * V), a.i32(1, (size_t)N * K), a.f32(2, N), a.f32(3, N), N, (int)V, (int)K,
             a.f32(7, (size_t)N * V));
  });
}

// attention(q, k, v, BH, T, D, scale, out, lse)
static napi_value js_attn(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 9);
    const long BH = a.integer(3), T = a.integer(4), D = a.integer(5);
    const double scale = a.num(6);
    if (!(scale > 0)) throw Err("scale must be > 0");
    const size_t n = (size_t)BH * T * D;
    attn_fwd(a.f32(0, n), a.f32(1, n), a.f32(2, n), BH, (int)T, (int)D, (float)scale, a.f32(7, n),
             a.f32(8, (size_t)BH * T));
  });
}

// attentionGrad(q, k, v, out, lse, dy, BH, T, D, scale, dq, dk, dv)
static napi_value js_attn_grad(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 13);
    const long BH = a.integer(6), T = a.integer(7), D = a.integer(8);
    const double scale = a.num(9);
    if (!(scale > 0)) throw Err("scale must be > 0");
    const size_t n = (size_t)BH * T * D;
    attn_bwd(a.f32(0, n), a.f32(1, n), a.f32(2, n), a.f32(3, n), a.f32(4, (size_t)BH * T), a.f32(5, n), BH, (int)T,
             (int)D, (float)scale, a.f32(10, n), a.f32(11, n), a.f32(12, n));
  });
}

// copyRows(src, srcOff, srcStride, dst, dstOff, dstStride, rows, cols): 4-byte elements; the strided
// row copies of SplitV and Concat.
static napi_value js_copy_rows(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 8);
    const long so = a.integer(1), ss = a.integer(2), dof = a.integer(4), ds = a.integer(5), rows = a.integer(6),
               cols = a.integer(7);
    if (rows == 0 || cols == 0) return;
    const uint32_t* src = a.word32(0, (size_t)so + (size_t)(rows - 1) * ss + cols, "copyRows");
    uint32_t* dst = a.word32(3, (size_t)dof + (size_t)(rows - 1) * ds + cols, "copyRows");
#pragma omp parallel for schedule(static) if (rows * cols > 262144)
    for (long r = 0; r < rows; r++) std::memcpy(dst + dof + (size_t)r * ds, src + so + (size_t)r * ss, sizeof(uint32_t) * cols);
  });
}

// segmentSum(x, ids, S, inner, numSegments, out)
static napi_value js_segment_sum(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 6);
    const long S = a.integer(2), inner = a.integer(3), nseg = a.integer(4);
    segment_sum(a.f32(0, (size_t)S * inner), a.i32(1, S), S, inner, nseg, a.f32(5, (size_t)nseg * inner));
  });
}

// transpose(x, out, shape[], perm[]) -- x/out any 4-byte typed arrays
static napi_value js_transpose(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 4);
    uint32_t len;
    napi_get_array_length(env, a.v[2], &len);
    uint32_t plen;
    napi_get_array_length(env, a.v[3], &plen);
    if (len < 1 || len > 8 || plen != len) throw Err("transpose: rank must be 1..8 and perm match");
    long shape[8];
    int perm[8];
    bool seen[8] = {false};
    size_t total = 1;
    for (uint32_t i = 0; i < len; i++) {
      napi_value e;
      double d;
      napi_get_element(env, a.v[2], i, &e);
      napi_get_value_double(env, e, &d);
      if (d < 0) throw Err("transpose: bad shape");
      shape[i] = (long)d;
      total *= shape[i];
      napi_get_element(env, a.v[3], i, &e);
      napi_get_value_double(env, e, &d);
      const int pi = (int)d;
      if (pi < 0 || pi >= (int)len || seen[pi]) throw Err("transpose: bad perm");
      seen[pi] = true;
      perm[i] = pi;
    }
    transpose4(a.word32(0, total, "transpose"), shape, perm, (int)len, a.word32(1, total, "transpose"));
  });
}

// sum(x, outer, red, inner, out)
// adamw(w, g, m, v, n, scale, beta1, beta2, eps, decay, stepSize, bc2, wOut, mOut, vOut)
static napi_value js_adamw(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 15);
    const size_t n = a.integer(4);
    adamw_update(a.f32(0, n), a.f32(1, n), a.f32(2, n), a.f32(3, n), (long)n, (float)a.num(5), (float)a.num(6),
                 (float)a.num(7), (float)a.num(8), (float)a.num(9), (float)a.num(10), (float)a.num(11), a.f32(12, n),
                 a.f32(13, n), a.f32(14, n));
  });
}

static napi_value js_sum(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 5);
    const long outer = a.integer(1), red = a.integer(2), inner = a.integer(3);
    reduce_sum(a.f32(0, (size_t)outer * red * inner), outer, red, inner, a.f32(4, (size_t)outer * inner));
  });
}

// binary(op, rev, big, n, small, ns, out)
static napi_value js_binary(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 7);
    const long n = a.integer(3), ns = a.integer(5);
    if (ns < 1 || n % ns) throw Err("binary: small size must divide big size");
    binary((int)a.integer(0), a.flag(1), a.f32(2, n), n, a.f32(4, ns), ns, a.f32(6, n));
  });
}

// blockSparseMatMul(x, w, blockMask, y, M, K, N, b): y = x @ (w ⊙ expand(blockMask)) (blocksparse.cc)
static void bs_dims(Args& a, size_t i, long& M, long& K, long& N, long& b) {
  M = a.integer(i);
  K = a.integer(i + 1);
  N = a.integer(i + 2);
  b = a.integer(i + 3);
  if (b < 1 || K % b || N % b) throw Err("blockSparseMatMul: block size must be >= 1 and divide K and N");
  if (M > INT32_MAX || K > INT32_MAX || N > INT32_MAX) throw Err("blockSparseMatMul: dimension too large");
}

// blockSparseMatMul(x, w, blockMask, y, M, K, N, b[, bias])
static napi_value js_block_sparse(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 8);
    long M, K, N, b;
    bs_dims(a, 4, M, K, N, b);
    float* y = a.f32(3, (size_t)M * N);
    block_sparse_fwd(a.f32(0, (size_t)M * K), a.f32(1, (size_t)K * N), a.i32(2, (size_t)(K / b) * (N / b)), y, (int)M,
                     (int)K, (int)N, (int)b, max_threads());
    if (a.n > 8 && !a.isNull(8)) {  // bias [N], added to every row
      const float* bias = a.f32(8, (size_t)N);
#pragma omp parallel for schedule(static) num_threads(max_threads()) if ((long)M * N > 65536)
      for (long r = 0; r < M; r++) {
        float* yr = y + (size_t)r * N;
#pragma omp simd
        for (long c = 0; c < N; c++) yr[c] += bias[c];
      }
    }
  });
}

// blockSparseMatMulGrad(x, w, blockMask, dy, dx, dw, M, K, N, b[, parts]): parts (default 3) = 1: dx only,
// 2: dw only (the other output is left untouched; for benchmarks), 3: both.
static napi_value js_block_sparse_grad(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 10);
    long M, K, N, b;
    bs_dims(a, 6, M, K, N, b);
    const long parts = a.n > 10 && !a.isNull(10) ? a.integer(10) : 3;
    if (parts < 1 || parts > 3) throw Err("blockSparseMatMulGrad: parts must be 1, 2 or 3");
    block_sparse_bwd(a.f32(0, (size_t)M * K), a.f32(1, (size_t)K * N), a.i32(2, (size_t)(K / b) * (N / b)),
                     a.f32(3, (size_t)M * N), (parts & 1) ? a.f32(4, (size_t)M * K) : nullptr,
                     (parts & 2) ? a.f32(5, (size_t)K * N) : nullptr, (int)M, (int)K, (int)N, (int)b, max_threads());
  });
}

static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 1);
    const long t = a.integer(0);
    if (t >= 1) g_threads = (int)t;
  });
}

static napi_value js_info(napi_env env, napi_callback_info) {
  napi_value o, t, s, mp;
  napi_create_object(env, &o);
  napi_create_int32(env, g_threads, &t);
  napi_create_string_utf8(env, simd_level(), NAPI_AUTO_LENGTH, &s);
#ifdef _OPENMP
  napi_get_boolean(env, true, &mp);
#else
  napi_get_boolean(env, false, &mp);
#endif
  napi_set_named_property(env, o, "threads", t);
  napi_set_named_property(env, o, "simd", s);
  napi_set_named_property(env, o, "openmp", mp);
  return o;
}

// stderrRedirect(path) -> saved fd: points file descriptor 2 at `path` (truncated) so that what
// native libraries print (Dawn, Mesa) lands there; stderrRestore(saved) undoes it. -1 where the
// platform has no dup2.
static napi_value js_stderr_redirect(napi_env env, napi_callback_info info) {
  napi_value out = nullptr;
  guard(env, [&] {
    size_t argc = 1;
    napi_value v;
    napi_get_cb_info(env, info, &argc, &v, nullptr, nullptr);
    char path[4096];
    size_t len = 0;
    if (argc < 1 || napi_get_value_string_utf8(env, v, path, sizeof path, &len) != napi_ok) throw Err("stderrRedirect: a path expected");
    int saved = -1;
#if defined(__unix__) || defined(__APPLE__)
    const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) throw Err(std::string("stderrRedirect: cannot open ") + path);
    fflush(stderr);
    saved = dup(2);
    if (saved < 0 || dup2(fd, 2) < 0) {
      close(fd);
      if (saved >= 0) close(saved);
      throw Err("stderrRedirect: dup2 failed");
    }
    close(fd);
#endif
    napi_create_int32(env, saved, &out);
  });
  return out;
}

static napi_value js_stderr_restore(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 1);
    const long saved = a.integer(0);
#if defined(__unix__) || defined(__APPLE__)
    if (saved >= 0) {
      fflush(stderr);
      dup2((int)saved, 2);
      close((int)saved);
    }
#endif
  });
}

}  // namespace pf

static napi_value Init(napi_env env, napi_value exports) {
  int hw = 1;
#ifdef _OPENMP
  hw = omp_get_num_procs();
#endif
  pf::g_threads = hw > 0 ? hw : 1;
  if (const char* e = std::getenv("PATCHFLOW_THREADS")) {
    const int t = std::atoi(e);
    if (t >= 1) pf::g_threads = t;
  }
  // Every kernel output is a fresh typed array (calloc). With glibc's defaults, arrays of a few MB
  // are mmapped and unmapped each time, so each one pays page faults on first touch (~15% of a
  // training step). Keep them in the heap instead and don't trim it (memory stays at its peak).
  // PATCHFLOW_MALLOC_TUNE=0 leaves glibc's defaults.
  bool mallocTuned = false;
#if defined(__GLIBC__)
  {
    const char* e = std::getenv("PATCHFLOW_MALLOC_TUNE");
    if (!e || std::strcmp(e, "0") != 0) {
      mallocTuned = mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1;
      mallocTuned = (mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024) == 1) && mallocTuned;
    }
  }
#endif
  {
    napi_value b;
    napi_get_boolean(env, mallocTuned, &b);
    napi_set_named_property(env, exports, "mallocTuned", b);
  }
  struct {
    const char* name;
    napi_callback cb;
  } fns[] = {
      {"matmul", pf::js_matmul},
      {"gelu", pf::js_gelu},
      {"geluGrad", pf::js_gelu_grad},
      {"layerNorm", pf::js_layernorm},
      {"layerNormGrad", pf::js_layernorm_grad},
      {"softmax", pf::js_softmax},
      {"crossEntropy", pf::js_xent},
      {"crossEntropyGrad", pf::js_xent_grad},
      {"attention", pf::js_attn},
      {"attentionGrad", pf::js_attn_grad},
      {"segmentSum", pf::js_segment_sum},
      {"copyRows", pf::js_copy_rows},
      {"transpose", pf::js_transpose},
      {"sum", pf::js_sum},
      {"adamw", pf::js_adamw},
      {"binary", pf::js_binary},
      {"blockSparseMatMul", pf::js_block_sparse},
      {"blockSparseMatMulGrad", pf::js_block_sparse_grad},
      {"setThreads", pf::js_set_threads},
      {"info", pf::js_info},
      {"stderrRedirect", pf::js_stderr_redirect},
      {"stderrRestore", pf::js_stderr_restore},
  };
  for (auto& f : fns) {
    napi_value fn;
    napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.cb, nullptr, &fn);
    napi_set_named_property(env, exports, f.name, fn);
  }
  return exports;
}

NAPI_MODULE(patchflow_cpu, Init)
