// patchflow cpu: block-sparse matmul, y = x @ (w ⊙ M) and its gradients, for a mask M of b x b blocks.
// Compiled once per ISA variant (isa.h).
//
// Same scheme as gemm.cc (packed operands, a register-tile micro-kernel, AVX-512 with a portable
// fallback), with the reduction dimension running over a list of "segments" (the kept blocks):
//
//   forward  y[:, j-block]  = sum_{i kept in column j} x[:, i-block] @ w[i-block, j-block]
//   dx       dx[:, i-block] = sum_{j kept in row i}    dy[:, j-block] @ w[i-block, j-block]^T
//   dw       dw[i-block, j-block] = x[:, i-block]^T @ dy[:, j-block]   (kept blocks only; 0 elsewhere)
//
// forward and dx share seg_gemm: the left operand (x or dy) is packed once per chunk of rows (only
// the column blocks some kept block uses), then each output column block packs its kept blocks of w
// (b x b each, transposed for dx) back to back and runs the micro-kernel over them, so the
// accumulators stay in registers across all of the block's segments. Tiles are 8 rows x 32 columns,
// or 16 x 16 for 16-wide blocks (b = 16). dw (dw_gemm) splits the reduction over M between the
// threads and runs one tile sequence per kept block, reading x and dy in place when b is a multiple
// of 16. Only kept blocks of w are read, and the work is proportional to the number of kept blocks
// (plus reading x / dy once and writing the outputs in full).
#include "blocksparse.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace pf {
namespace PF_NS {
namespace {

constexpr int RP = 8;  // rows per packed panel of the left operand
constexpr int VL = 16; // lanes per vector (one zmm)

// Where a register tile goes: up to 2 vectors of 16 lanes (each contiguous in C, lanes masked), rows r < mr.
struct Out {
  float* c[2];
  unsigned m[2];
  long ldc;
  int mr;
  bool acc;
};

static inline unsigned lanes(int w) { return w >= VL ? 0xFFFFu : w <= 0 ? 0u : ((1u << w) - 1u); }

// C (+)= acc for rows r < o.mr, lanes masked by o.m: the epilogue of both micro-kernels.
#if defined(__AVX512F__)
template <int NV, int MRK>
static inline void store_tile(const __m512 (&c)[MRK][NV], const Out& o) {
#pragma GCC unroll 16
  for (int r = 0; r < MRK; r++) {
    if (r < o.mr) {
#pragma GCC unroll 2
      for (int v = 0; v < NV; v++) {
        float* dst = o.c[v] + (size_t)r * o.ldc;
        const __mmask16 m = (__mmask16)o.m[v];
        __m512 val = c[r][v];
        if (o.acc) val = _mm512_add_ps(val, _mm512_maskz_loadu_ps(m, dst));
        _mm512_mask_storeu_ps(dst, m, val);
      }
    }
  }
}
#else
template <int NV, int MRK>
static inline void store_tile(const float (&c)[MRK][NV * VL], const Out& o) {
  for (int r = 0; r < o.mr && r < MRK; r++)
    for (int v = 0; v < NV; v++) {
      float* dst = o.c[v] + (size_t)r * o.ldc;
      for (int l = 0; l < VL; l++)
        if (o.m[v] >> l & 1u) dst[l] = (o.acc ? dst[l] : 0.f) + c[r][v * VL + l];
    }
}
#endif

// Register tile of MRK rows x NV vectors: acc = sum over segments s and p < seglen of
// A_s[p][r] * B[p][lane]. Row panel 0 (rows 0..7) of segment s starts at a + segoff[s], packed
// p-major, RP floats per p; rows 8..15 (MRK = 16) are the next panel, aps floats further. B is packed
// p-major with NV*16 floats per p, all segments back to back. Then C (+)= acc for rows < mr.
template <int NV, int MRK>
static inline void mk(const float* __restrict a, long aps, const long* segoff, int nseg, int seglen,
                      const float* __restrict bp, const Out& o) {
  static_assert(MRK == RP || MRK == 2 * RP, "MRK is 8 or 16");
#if defined(__AVX512F__)
  __m512 c[MRK][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MRK; r++)
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) c[r][v] = _mm512_setzero_ps();
  for (int s = 0; s < nseg; s++) {
    const float* a0 = a + segoff[s];
    const float* a1 = a0 + (MRK == 2 * RP ? aps : 0);
    for (int p = 0; p < seglen; p++) {
      __m512 bv[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(bp + v * VL);
#pragma GCC unroll 8
      for (int r = 0; r < RP; r++) {
        const __m512 av = _mm512_set1_ps(a0[r]);
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) c[r][v] = _mm512_fmadd_ps(av, bv[v], c[r][v]);
      }
      if constexpr (MRK == 2 * RP) {
#pragma GCC unroll 8
        for (int r = 0; r < RP; r++) {
          const __m512 av = _mm512_set1_ps(a1[r]);
#pragma GCC unroll 2
          for (int v = 0; v < NV; v++) c[RP + r][v] = _mm512_fmadd_ps(av, bv[v], c[RP + r][v]);
        }
      }
      a0 += RP;
      a1 += RP;
      bp += NV * VL;
    }
  }
  store_tile<NV, MRK>(c, o);
#else
  float c[MRK][NV * VL];
  for (int r = 0; r < MRK; r++)
    for (int l = 0; l < NV * VL; l++) c[r][l] = 0.f;
  for (int s = 0; s < nseg; s++) {
    const float* a0 = a + segoff[s];
    const float* a1 = a0 + (MRK == 2 * RP ? aps : 0);
    for (int p = 0; p < seglen; p++) {
      for (int r = 0; r < MRK; r++) {
        const float av = r < RP ? a0[r] : a1[r - RP];
        for (int l = 0; l < NV * VL; l++) c[r][l] += av * bp[l];
      }
      a0 += RP;
      a1 += RP;
      bp += NV * VL;
    }
  }
  store_tile<NV, MRK>(c, o);
#endif
}

// mk on unpacked operands (dw with b a multiple of 16): row p of the A panel is a + p*as (MRK
// contiguous floats), row p of B is bp + p*bs (NV*16 contiguous floats); one segment of length kc.
template <int NV, int MRK>
static inline void mk_direct(const float* __restrict a, long as, const float* __restrict bp, long bs, int kc,
                             const Out& o) {
#if defined(__AVX512F__)
  __m512 c[MRK][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MRK; r++)
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) c[r][v] = _mm512_setzero_ps();
  for (int p = 0; p < kc; p++) {
    // rows of x / dy are far apart (a page each when K or N is 1024): the hardware prefetchers do not
    // follow them, so prefetch 16 rows ahead (measured: up to 1.4x faster at low density)
    __builtin_prefetch(a + 16 * as, 0, 3);
    __builtin_prefetch(bp + 16 * bs, 0, 3);
    if (NV == 2) __builtin_prefetch(bp + 16 * bs + VL, 0, 3);
    __m512 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(bp + v * VL);
#pragma GCC unroll 16
    for (int r = 0; r < MRK; r++) {
      const __m512 av = _mm512_set1_ps(a[r]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; v++) c[r][v] = _mm512_fmadd_ps(av, bv[v], c[r][v]);
    }
    a += as;
    bp += bs;
  }
  store_tile<NV, MRK>(c, o);
#else
  float c[MRK][NV * VL];
  for (int r = 0; r < MRK; r++)
    for (int l = 0; l < NV * VL; l++) c[r][l] = 0.f;
  for (int p = 0; p < kc; p++, a += as, bp += bs)
    for (int r = 0; r < MRK; r++)
      for (int l = 0; l < NV * VL; l++) c[r][l] += a[r] * bp[l];
  store_tile<NV, MRK>(c, o);
#endif
}

struct Bufs {
  std::vector<float> a, b, c;  // packed left / right operands; dw partial sums
  std::vector<long> off;
  std::vector<char> used;
};

static inline Bufs& bufs() {
  thread_local Bufs t;
  return t;
}

template <class T>
static inline T* need(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Copies 8 floats, or the first n (< 8) and zeros after them.
static inline void copy8(float* d, const float* s, int n) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
  if (n >= RP) _mm256_storeu_ps(d, _mm256_loadu_ps(s));
  else _mm256_storeu_ps(d, _mm256_maskz_loadu_ps((__mmask8)((1u << std::max(n, 0)) - 1u), s));
#else
  for (int r = 0; r < RP; r++) d[r] = r < n ? s[r] : 0.f;
#endif
}

// Copies n <= 32 floats into a row of nrp (16 or 32), zero padded.
static inline void copy_row(float* d, const float* s, int n, int nrp) {
#if defined(__AVX512F__)
  _mm512_storeu_ps(d, _mm512_maskz_loadu_ps((__mmask16)lanes(n), s));
  if (nrp > VL) _mm512_storeu_ps(d + VL, _mm512_maskz_loadu_ps((__mmask16)lanes(n - VL), s + VL));
#else
  for (int c = 0; c < nrp; c++) d[c] = c < n ? s[c] : 0.f;
#endif
}

#if defined(__AVX__)
// 8 rows of 8 floats (src + r*lda) -> d[p*ldd + r] for p < 8 (an 8x8 transpose).
static inline void transpose8x8(const float* src, long lda, float* d, long ldd = RP) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lda), r2 = _mm256_loadu_ps(src + 2 * lda),
         r3 = _mm256_loadu_ps(src + 3 * lda), r4 = _mm256_loadu_ps(src + 4 * lda), r5 = _mm256_loadu_ps(src + 5 * lda),
         r6 = _mm256_loadu_ps(src + 6 * lda), r7 = _mm256_loadu_ps(src + 7 * lda);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
               t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
               t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
               s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)),
               s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2)),
               s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(d + 0 * ldd, _mm256_permute2f128_ps(s0, s4, 0x20));
  _mm256_storeu_ps(d + 1 * ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
  _mm256_storeu_ps(d + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
  _mm256_storeu_ps(d + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
  _mm256_storeu_ps(d + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
  _mm256_storeu_ps(d + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
  _mm256_storeu_ps(d + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
  _mm256_storeu_ps(d + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}
#endif

// Packs rows [r0, r0 + rows) of A (row-major, lda), column blocks kb with used[kb], into panels of RP
// rows: pa[q*KA*RP + (kb*b + p)*RP + r]; rows rows..rowsPad-1 are zero.
static void pack_rows(const float* A, long lda, int r0, int rows, int rowsPad, int KA, int b, const char* used, int nkb,
                      float* pa) {
  for (int q = 0; q < rowsPad / RP; q++) {
    float* pq = pa + (size_t)q * KA * RP;
    const int rv = std::min(RP, rows - q * RP);  // valid rows in this panel (may be <= 0)
    const float* src = A + (size_t)(r0 + q * RP) * lda;
    for (int kb = 0; kb < nkb; kb++) {
      if (!used[kb]) continue;
      float* d = pq + (size_t)kb * b * RP;
      const float* s = src + (size_t)kb * b;
      int p = 0;
      // prefetch the next panel's rows of this block (8 strided streams)
      if (q + 1 < rowsPad / RP)
        for (int r = 0; r < RP && (q + 1) * RP + r < rows; r++)
          for (int pp = 0; pp < b; pp += 16) __builtin_prefetch(s + (size_t)(RP + r) * lda + pp, 0, 3);
#if defined(__AVX__)
      if (rv == RP)
        for (; p + 8 <= b; p += 8) transpose8x8(s + p, lda, d + p * RP);
#endif
      for (int r = 0; r < RP; r++) {
        if (r < rv) {
          const float* sr = s + (size_t)r * lda;
          for (int pp = p; pp < b; pp++) d[pp * RP + r] = sr[pp];
        } else {
          for (int pp = p; pp < b; pp++) d[pp * RP + r] = 0.f;
        }
      }
    }
  }
}

// C[:, o*b : o*b + b] = sum over s in [ptr[o], ptr[o+1]) of A[:, idx[s]*b : +b] @ B_s, for output blocks
// o < nob (C row-major, ldc; blocks with no segment are zero-filled). packB(o, c0, wdt, nrp, dst) writes
// columns [c0, c0 + wdt) of all of o's B_s (b rows each, in segment order) as dst[(s*b + p)*nrp + c],
// zero columns up to nrp.
template <class PackB>
static void seg_gemm(const float* A, long lda, int M, int KA, int b, int nob, const int* ptr, const int* idx,
                     const PackB& packB, float* C, long ldc, int nt) {
  if (M <= 0 || nob <= 0) return;
  const int nkb = KA / b;
  const long nnz = ptr[nob];
  int nused = 0;
  {
    std::vector<char> u((size_t)nkb, 0);
    for (long s = 0; s < nnz; s++) u[idx[s]] = 1;
    for (int kb = 0; kb < nkb; kb++) nused += u[kb];
  }
  // rows per task: the packed left operand (rows x used columns) stays around 256 KiB (L2)
  const long kcols = std::max(1L, (long)nused * b);
  int mc = (int)std::min<long>(256, std::max<long>(16, 65536 / kcols)) / 16 * 16;
  const double flops = 2.0 * M * (double)b * b * nnz;
  const int use = flops < 2e5 && (double)M * nob * b < 65536 ? 1 : std::max(1, nt);
  int nrc = (M + mc - 1) / mc;
  while (nrc < 2 * use && mc > 64) {
    mc = std::max(64, mc / 2 / 16 * 16);
    nrc = (M + mc - 1) / mc;
  }
  const int ncg = nrc >= 2 * use ? 1 : std::min(nob, (2 * use + nrc - 1) / nrc);
  const long tasks = (long)nrc * ncg;
#pragma omp parallel for schedule(dynamic, 1) num_threads(use) if (use > 1)
  for (long t = 0; t < tasks; t++) {
    const int rc = (int)(t / ncg), cg = (int)(t % ncg);
    const int r0 = rc * mc, rows = std::min(mc, M - r0), rowsPad = (rows + 15) / 16 * 16;
    const int o0 = (int)((long)cg * nob / ncg), o1 = (int)((long)(cg + 1) * nob / ncg);
    // zero the runs of output blocks without segments
    for (int o = o0; o < o1;) {
      if (ptr[o + 1] > ptr[o]) {
        o++;
        continue;
      }
      int e = o;
      while (e < o1 && ptr[e + 1] == ptr[e]) e++;
      for (int r = 0; r < rows; r++) std::memset(C + (size_t)(r0 + r) * ldc + (size_t)o * b, 0, sizeof(float) * (e - o) * b);
      o = e;
    }
    if (ptr[o1] == ptr[o0]) continue;
    Bufs& B = bufs();
    char* used = need(B.used, (size_t)nkb + 1);
    std::fill(used, used + nkb, 0);
    for (long s = ptr[o0]; s < ptr[o1]; s++) used[idx[s]] = 1;
    float* pa = need(B.a, (size_t)rowsPad * KA + 1);
    pack_rows(A, lda, r0, rows, rowsPad, KA, b, used, nkb, pa);
    for (int o = o0; o < o1; o++) {
      const int nseg = ptr[o + 1] - ptr[o];
      if (nseg == 0) continue;
      float* cb = C + (size_t)r0 * ldc + (size_t)o * b;
      long* off = need(B.off, (size_t)nseg);
      for (int s = 0; s < nseg; s++) off[s] = (long)idx[ptr[o] + s] * b * RP;
      for (int c0 = 0; c0 < b; c0 += 2 * VL) {
        const int wdt = std::min(2 * VL, b - c0), nrp = wdt > VL ? 2 * VL : VL;
        float* pb = need(B.b, (size_t)nseg * b * nrp);
        packB(o, c0, wdt, nrp, pb);
        Out out;
        out.ldc = ldc;
        out.acc = false;
        out.m[0] = lanes(wdt);
        out.m[1] = lanes(wdt - VL);
        if (nrp == 2 * VL) {
          for (int ir = 0; ir < rows; ir += RP) {
            out.c[0] = cb + (size_t)ir * ldc + c0;
            out.c[1] = out.c[0] + VL;
            out.mr = std::min(RP, rows - ir);
            mk<2, RP>(pa + (size_t)(ir / RP) * KA * RP, 0, off, nseg, b, pb, out);
          }
        } else {
          for (int ir = 0; ir < rows; ir += 2 * RP) {
            out.c[0] = cb + (size_t)ir * ldc + c0;
            out.c[1] = nullptr;
            out.mr = std::min(2 * RP, rows - ir);
            mk<1, 2 * RP>(pa + (size_t)(ir / RP) * KA * RP, (long)KA * RP, off, nseg, b, pb, out);
          }
        }
      }
    }
  }
}

// Kept blocks as compressed lists: by column (for each j, kept i ascending) and by row (for each i, kept j).
static void col_lists(const int32_t* mask, int KB, int NB, std::vector<int>& ptr, std::vector<int>& idx) {
  ptr.assign((size_t)NB + 1, 0);
  idx.clear();
  for (int j = 0; j < NB; j++) {
    ptr[j] = (int)idx.size();
    for (int i = 0; i < KB; i++)
      if (mask[(size_t)i * NB + j] != 0) idx.push_back(i);
  }
  ptr[NB] = (int)idx.size();
}

static void row_lists(const int32_t* mask, int KB, int NB, std::vector<int>& ptr, std::vector<int>& idx) {
  ptr.assign((size_t)KB + 1, 0);
  idx.clear();
  for (int i = 0; i < KB; i++) {
    ptr[i] = (int)idx.size();
    for (int j = 0; j < NB; j++)
      if (mask[(size_t)i * NB + j] != 0) idx.push_back(j);
  }
  ptr[KB] = (int)idx.size();
}

// dw[i-block, j-block] = x[:, i-block]^T @ dy[:, j-block] for the kept (i, j); exact 0 elsewhere.
// The threads split M (the reduction): each runs over its rows in chunks of kc and accumulates every
// kept block (one register tile per block and panel). With b a multiple of 16 the tiles read x and dy
// in place; otherwise each chunk's used row blocks of x^T and column blocks of dy are packed once
// (thread_local buffers, zero padded to 16). Thread 0 accumulates into dw itself, the others into a
// thread_local [kept][b][b] buffer; one pass adds those at the end (no barrier until then).
static void dw_gemm(const float* x, const float* dy, int M, int K, int N, int b, const int* rptr, const int* ridx,
                    float* dw, int nt) {
  if (K <= 0 || N <= 0) return;
  const int KB = K / b, NB = N / b;
  const int nnz = rptr[KB];
  if (M <= 0 || nnz == 0) {
    std::memset(dw, 0, sizeof(float) * (size_t)K * N);
    return;
  }
  const double flops = 2.0 * M * (double)b * b * nnz;
  int use = flops < 2e5 && (double)K * N < 65536 ? 1 : std::max(1, nt);
  use = std::max(1, std::min(use, M / 64));
  const int bpad = (b + 15) / 16 * 16;  // packed rows (x^T) / columns (dy) per block
  // slots of the used row blocks (x^T) and column blocks (dy)
  std::vector<int> rslot((size_t)KB, -1), cslot((size_t)NB, -1), ur, uc;
  for (int i = 0; i < KB; i++)
    for (int s = rptr[i]; s < rptr[i + 1]; s++) {
      const int j = ridx[s];
      if (rslot[i] < 0) { rslot[i] = (int)ur.size(); ur.push_back(i); }
      if (cslot[j] < 0) { cslot[j] = (int)uc.size(); uc.push_back(j); }
    }
  const int nur = (int)ur.size(), nuc = (int)uc.size();
  // rows per chunk: the packed chunk stays around 512 KiB
  int kc0 = (int)std::min<long>(512, std::max<long>(16, 131072 / ((long)(nur + nuc) * bpad)));
  if (kc0 >= 64) kc0 = kc0 / 16 * 16;
  // b a multiple of 16: the tiles read x and dy in place (no packing; measured faster than packing,
  // by up to 1.5x at low density, within ~10% either way when dense); chunks of 128 rows stay in L2
  const bool direct = b % VL == 0;
  if (direct) kc0 = 128;
  // kept blocks in the order the tiles visit them: consecutive blocks share the operand with the larger
  // row stride (dy's column block when N >= K, else x's row block), which then stays in L1
  std::vector<int> bi((size_t)nnz), bj((size_t)nnz);
  if (N >= K) {
    std::vector<int> cnt((size_t)NB + 1, 0);
    for (int s = 0; s < nnz; s++) cnt[ridx[s] + 1]++;
    for (int j = 0; j < NB; j++) cnt[j + 1] += cnt[j];
    for (int i = 0; i < KB; i++)
      for (int s = rptr[i]; s < rptr[i + 1]; s++) {
        const int t = cnt[ridx[s]]++;
        bi[t] = i;
        bj[t] = ridx[s];
      }
  } else {
    for (int i = 0; i < KB; i++)
      for (int s = rptr[i]; s < rptr[i + 1]; s++) {
        bi[s] = i;
        bj[s] = ridx[s];
      }
  }
  std::vector<float*> part((size_t)use, nullptr);
  const long zero_off = 0;
#pragma omp parallel num_threads(use) if (use > 1)
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
    const int tid = 0, nth = 1;
#endif
    // exact zeros outside the kept blocks (kept lists are ascending); disjoint from what follows
#pragma omp for schedule(static) nowait
    for (int i = 0; i < KB; i++) {
      for (int r = 0; r < b; r++) {
        float* row = dw + (size_t)(i * b + r) * N;
        int c = 0;
        for (int s = rptr[i]; s < rptr[i + 1]; s++) {
          const int start = ridx[s] * b;
          if (start > c) std::memset(row + c, 0, sizeof(float) * (start - c));
          c = start + b;
        }
        if (c < N) std::memset(row + c, 0, sizeof(float) * (N - c));
      }
    }
    const int m0 = (int)((long)M * tid / nth), m1 = (int)((long)M * (tid + 1) / nth);
    const int kc = std::min(kc0, std::max(1, m1 - m0));
    Bufs& B = bufs();
    float* pa = direct ? nullptr : need(B.a, (size_t)nur * bpad * kc);
    float* pb = direct ? nullptr : need(B.b, (size_t)nuc * bpad * kc);
    float* mine = tid == 0 ? nullptr : need(B.c, (size_t)nnz * b * b);
    if (tid > 0) part[tid] = mine;
    for (int pc = m0; pc < m1; pc += kc) {
      const int kcc = std::min(kc, m1 - pc);
      // x^T block slot si, panel ap of 8 rows: pa[si*bpad*kcc + ap*kcc*8 + p*8 + r];
      // dy block slot sj, panel at column c0 (32 or 16 wide): pb[sj*bpad*kcc + c0*kcc + p*nrp + c]
      if (direct) {
        for (int s = 0; s < nnz; s++) {
          const int i = bi[s], j = bj[s];
          const float* ai = x + (size_t)pc * K + (size_t)i * b;
          const float* bjp = dy + (size_t)pc * N + (size_t)j * b;
          float* cb = mine ? mine + (size_t)s * b * b : dw + (size_t)i * b * N + (size_t)j * b;
          const long ldc = mine ? b : N;
          Out out;
          out.ldc = ldc;
          out.acc = pc > m0;
          out.m[0] = out.m[1] = 0xFFFFu;
          for (int c0 = 0; c0 < b; c0 += 2 * VL) {
            if (b - c0 >= 2 * VL) {
              for (int r0 = 0; r0 < b; r0 += RP) {
                out.c[0] = cb + (size_t)r0 * ldc + c0;
                out.c[1] = out.c[0] + VL;
                out.mr = RP;
                mk_direct<2, RP>(ai + r0, K, bjp + c0, N, kcc, out);
              }
            } else {
              for (int r0 = 0; r0 < b; r0 += 2 * RP) {
                out.c[0] = cb + (size_t)r0 * ldc + c0;
                out.c[1] = nullptr;
                out.mr = 2 * RP;
                mk_direct<1, 2 * RP>(ai + r0, K, bjp + c0, N, kcc, out);
              }
            }
          }
        }
        continue;
      }
      for (int si = 0; si < nur; si++) {
        const float* src = x + (size_t)pc * K + (size_t)ur[si] * b;
        float* d = pa + (size_t)si * bpad * kcc;
        for (int p = 0; p < kcc; p++, src += K) {
          for (int ap = 0; ap < bpad / RP; ap++) copy8(d + (size_t)ap * kcc * RP + (size_t)p * RP, src + ap * RP, b - ap * RP);
        }
      }
      for (int sj = 0; sj < nuc; sj++) {
        const float* src = dy + (size_t)pc * N + (size_t)uc[sj] * b;
        float* d = pb + (size_t)sj * bpad * kcc;
        for (int p = 0; p < kcc; p++, src += N) {
          for (int c0 = 0; c0 < b; c0 += 2 * VL) {
            const int wdt = std::min(2 * VL, b - c0), nrp = wdt > VL ? 2 * VL : VL;
            copy_row(d + (size_t)c0 * kcc + (size_t)p * nrp, src + c0, wdt, nrp);
          }
        }
      }
      for (int s = 0; s < nnz; s++) {
        const int i = bi[s], j = bj[s];
        const float* ai = pa + (size_t)rslot[i] * bpad * kcc;
        const float* bjp = pb + (size_t)cslot[j] * bpad * kcc;
        float* cb = mine ? mine + (size_t)s * b * b : dw + (size_t)i * b * N + (size_t)j * b;
        const long ldc = mine ? b : N;
        for (int c0 = 0; c0 < b; c0 += 2 * VL) {
          const int wdt = std::min(2 * VL, b - c0);
          Out out;
          out.ldc = ldc;
          out.acc = pc > m0;
          out.m[0] = lanes(wdt);
          out.m[1] = lanes(wdt - VL);
          if (wdt > VL) {
            for (int ap = 0; ap * RP < b; ap++) {
              out.c[0] = cb + (size_t)ap * RP * ldc + c0;
              out.c[1] = out.c[0] + VL;
              out.mr = std::min(RP, b - ap * RP);
              mk<2, RP>(ai + (size_t)ap * kcc * RP, 0, &zero_off, 1, kcc, bjp + (size_t)c0 * kcc, out);
            }
          } else {
            for (int ap = 0; ap * RP < b; ap += 2) {
              out.c[0] = cb + (size_t)ap * RP * ldc + c0;
              out.c[1] = nullptr;
              out.mr = std::min(2 * RP, b - ap * RP);
              mk<1, 2 * RP>(ai + (size_t)ap * kcc * RP, (long)kcc * RP, &zero_off, 1, kcc, bjp + (size_t)c0 * kcc, out);
            }
          }
        }
      }
    }
    if (nth > 1) {
#pragma omp barrier
#pragma omp for schedule(static)
      for (int s = 0; s < nnz; s++) {
        const int i = bi[s], j = bj[s];
        for (int r = 0; r < b; r++) {
          float* d = dw + (size_t)(i * b + r) * N + (size_t)j * b;
          for (int t = 1; t < nth; t++) {
            const float* src = part[t] + (size_t)s * b * b + (size_t)r * b;
#pragma omp simd
            for (int c = 0; c < b; c++) d[c] += src[c];
          }
        }
      }
    }
  }
}

}  // namespace

void block_sparse_fwd(const float* x, const float* w, const int32_t* mask, float* y, int M, int K, int N, int b,
                      int threads) {
  if (M <= 0 || N <= 0 || b <= 0) return;
  const int KB = K / b, NB = N / b;
  std::vector<int> ptr, idx;
  col_lists(mask, KB, NB, ptr, idx);
  // for output column block j: rows p of each kept w[i-block, j-block], columns [c0, c0 + wdt)
  auto packB = [&](int j, int c0, int wdt, int nrp, float* dst) {
    const int* segs = idx.data() + ptr[j];
    const int nseg = ptr[j + 1] - ptr[j];
    for (int s = 0; s < nseg; s++) {
      const float* src = w + (size_t)segs[s] * b * N + (size_t)j * b + c0;
      float* d = dst + (size_t)s * b * nrp;
      for (int p = 0; p < b; p++) copy_row(d + (size_t)p * nrp, src + (size_t)p * N, wdt, nrp);
    }
  };
  seg_gemm(x, K, M, K, b, NB, ptr.data(), idx.data(), packB, y, N, threads);
}

void block_sparse_bwd(const float* x, const float* w, const int32_t* mask, const float* dy, float* dx, float* dw, int M,
                      int K, int N, int b, int threads) {
  if (b <= 0) return;
  const int KB = K / b, NB = N / b;
  std::vector<int> ptr, idx;
  row_lists(mask, KB, NB, ptr, idx);
  // dx column block i: for each kept j, B = w[i-block, j-block]^T: B[p][c] = w[(i*b + c)*N + j*b + p]
  auto packBt = [&](int i, int c0, int wdt, int nrp, float* dst) {
    const int* segs = idx.data() + ptr[i];
    const int nseg = ptr[i + 1] - ptr[i];
    for (int s = 0; s < nseg; s++) {
      float* d = dst + (size_t)s * b * nrp;
      const float* src = w + (size_t)(i * b + c0) * N + (size_t)segs[s] * b;
      int c = 0;
#if defined(__AVX__)
      if (b % 8 == 0)
        for (; c + 8 <= wdt; c += 8)
          for (int p = 0; p < b; p += 8) transpose8x8(src + (size_t)c * N + p, N, d + (size_t)p * nrp + c, nrp);
#endif
      for (; c < wdt; c++)
        for (int p = 0; p < b; p++) d[(size_t)p * nrp + c] = src[(size_t)c * N + p];
      for (; c < nrp; c++)
        for (int p = 0; p < b; p++) d[(size_t)p * nrp + c] = 0.f;
    }
  };
  if (dx) seg_gemm(dy, N, M, N, b, KB, ptr.data(), idx.data(), packBt, dx, K, threads);
  if (dw) dw_gemm(x, dy, M, K, N, b, ptr.data(), idx.data(), dw, threads);
}

}  // namespace PF_NS
}  // namespace pf
