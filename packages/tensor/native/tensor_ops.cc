// patchflow cpu: the stock tfjs kernels that were slow in JavaScript: UnsortedSegmentSum, Transpose,
// Sum, the float32 broadcast binary ops (Add, Sub, Multiply, RealDiv), and the strided row copies of
// SplitV / Concat / the block-sparse bias. Compiled once per ISA variant (isa.h).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "kernels.h"

namespace pf {
namespace PF_NS {

// ---------------------------------------------------------------------------------------------
// UnsortedSegmentSum (the gradient of the embedding gather): out[ids[i], :] += x[i, :]; ids outside
// [0, numSegments) are dropped, as in TensorFlow. Parallel over column chunks (no write conflicts).

void segment_sum(const float* x, const int32_t* ids, long S, long inner, long nseg, float* out) {
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

void transpose4(const uint32_t* x, const long* shape, const int* perm, int rank, uint32_t* out) {
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
void reduce_sum(const float* x, long outer, long red, long inner, float* out) {
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

void binary(int op, bool rev, const float* big, long n, const float* small, long ns, float* out) {
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
// Strided copies

void copy_rows(const uint32_t* src, long srcStride, uint32_t* dst, long dstStride, long rows, long cols) {
#pragma omp parallel for schedule(static) if (rows * cols > 262144)
  for (long r = 0; r < rows; r++) std::memcpy(dst + (size_t)r * dstStride, src + (size_t)r * srcStride, sizeof(uint32_t) * cols);
}

void add_row_bias(float* y, const float* bias, long rows, long cols, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (rows * cols > 65536)
  for (long r = 0; r < rows; r++) {
    float* yr = y + (size_t)r * cols;
#pragma omp simd
    for (long c = 0; c < cols; c++) yr[c] += bias[c];
  }
}

}  // namespace PF_NS
}  // namespace pf
