// patchflow cpu: the Node-API glue of the native kernels (the addon's exported functions and Init).
//
// Every function works in place on typed arrays the caller owns (inputs and preallocated outputs), so
// nothing is copied. Shapes arrive as numbers; lengths are checked against them here, before any
// pointer is touched, and then the kernel runs through the kernel table of the ISA variant that
// dispatch.cc chose when the addon loaded (kernel_table.h). This file holds no math; it is compiled
// for the target's baseline instruction set. Threads: OpenMP, count from PATCHFLOW_THREADS (default:
// all cores).
#include <node_api.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
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

#include "dispatch.h"
#include "kernel_table.h"
#if PF_OMP_SHIM
#include "omp_shim.h"
#endif

namespace pf {

int g_threads = 1;

static inline int max_threads() { return g_threads; }

// The chosen variant's kernels (set in Init, before any function is exported).
static const KernelTable* g_kernels = nullptr;
static inline const KernelTable& kt() { return *g_kernels; }

// ---------------------------------------------------------------------------------------------
// argument checking

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
    kt().matmul((int)batch, (int)ba, (int)bb, (int)M, (int)N, (int)K, a.flag(9), a.flag(10), A, B, C, bias,
           (int)a.integer(12), (float)a.num(13));
  });
}

static napi_value js_gelu(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 3);
    const size_t n = a.integer(2);
    kt().gelu(a.f32(0, n), a.f32(1, n), n);
  });
}

static napi_value js_gelu_grad(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 4);
    const size_t n = a.integer(3);
    kt().gelu_grad(a.f32(0, n), a.f32(1, n), a.f32(2, n), n);
  });
}

// layerNorm(x, gamma, beta, rows, C, eps, y, mean, rstd)
static napi_value js_layernorm(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 9);
    const long rows = a.integer(3), C = a.integer(4);
    const size_t n = (size_t)rows * C;
    kt().layernorm(a.f32(0, n), a.f32(1, C), a.f32(2, C), (float)a.num(5), rows, (int)C, a.f32(6, n), a.f32(7, rows),
                  a.f32(8, rows));
  });
}

// layerNormGrad(dy, x, gamma, mean, rstd, rows, C, dx, dgamma, dbeta)
static napi_value js_layernorm_grad(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 10);
    const long rows = a.integer(5), C = a.integer(6);
    const size_t n = (size_t)rows * C;
    kt().layernorm_grad(a.f32(0, n), a.f32(1, n), a.f32(2, C), a.f32(3, rows), a.f32(4, rows), rows, (int)C, a.f32(7, n),
                  a.f32(8, C), a.f32(9, C));
  });
}

// softmax(x, y, rows, C)
static napi_value js_softmax(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 4);
    const long rows = a.integer(2), C = a.integer(3);
    kt().softmax(a.f32(0, (size_t)rows * C), a.f32(1, (size_t)rows * C), rows, (int)C);
  });
}

// crossEntropy(logits, labels, N, V, K, loss, lse)
static napi_value js_xent(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 7);
    const long N = a.integer(2), V = a.integer(3), K = a.integer(4);
    if (K < 1) throw Err("K must be >= 1");
    kt().xent(a.f32(0, (size_t)N * V), a.i32(1, (size_t)N * K), N, (int)V, (int)K, a.f32(5, N), a.f32(6, N));
  });
}

// crossEntropyGrad(logits, labels, lse, dy, N, V, K, dlogits)
static napi_value js_xent_grad(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 8);
    const long N = a.integer(4), V = a.integer(5), K = a.integer(6);
    if (K < 1) throw Err("K must be >= 1");
    kt().xent_grad(a.f32(0, (size_t)N * V), a.i32(1, (size_t)N * K), a.f32(2, N), a.f32(3, N), N, (int)V, (int)K,
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
    kt().attention(a.f32(0, n), a.f32(1, n), a.f32(2, n), BH, (int)T, (int)D, (float)scale, a.f32(7, n),
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
    kt().attention_grad(a.f32(0, n), a.f32(1, n), a.f32(2, n), a.f32(3, n), a.f32(4, (size_t)BH * T), a.f32(5, n), BH, (int)T,
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
    kt().copy_rows(src + so, ss, dst + dof, ds, rows, cols);
  });
}

// segmentSum(x, ids, S, inner, numSegments, out)
static napi_value js_segment_sum(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 6);
    const long S = a.integer(2), inner = a.integer(3), nseg = a.integer(4);
    kt().segment_sum(a.f32(0, (size_t)S * inner), a.i32(1, S), S, inner, nseg, a.f32(5, (size_t)nseg * inner));
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
    kt().transpose(a.word32(0, total, "transpose"), shape, perm, (int)len, a.word32(1, total, "transpose"));
  });
}

// adamw(w, g, m, v, n, scale, beta1, beta2, eps, decay, stepSize, bc2, wOut, mOut, vOut)
static napi_value js_adamw(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 15);
    const size_t n = a.integer(4);
    kt().adamw(a.f32(0, n), a.f32(1, n), a.f32(2, n), a.f32(3, n), (long)n, (float)a.num(5), (float)a.num(6),
                 (float)a.num(7), (float)a.num(8), (float)a.num(9), (float)a.num(10), (float)a.num(11), a.f32(12, n),
                 a.f32(13, n), a.f32(14, n));
  });
}

// sum(x, outer, red, inner, out)
static napi_value js_sum(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 5);
    const long outer = a.integer(1), red = a.integer(2), inner = a.integer(3);
    kt().sum(a.f32(0, (size_t)outer * red * inner), outer, red, inner, a.f32(4, (size_t)outer * inner));
  });
}

// binary(op, rev, big, n, small, ns, out)
static napi_value js_binary(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 7);
    const long n = a.integer(3), ns = a.integer(5);
    if (ns < 1 || n % ns) throw Err("binary: small size must divide big size");
    kt().binary((int)a.integer(0), a.flag(1), a.f32(2, n), n, a.f32(4, ns), ns, a.f32(6, n));
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
    kt().block_sparse(a.f32(0, (size_t)M * K), a.f32(1, (size_t)K * N), a.i32(2, (size_t)(K / b) * (N / b)), y, (int)M,
                     (int)K, (int)N, (int)b, max_threads());
    if (a.n > 8 && !a.isNull(8)) {  // bias [N], added to every row
      kt().add_row_bias(y, a.f32(8, (size_t)N), M, N, max_threads());
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
    kt().block_sparse_grad(a.f32(0, (size_t)M * K), a.f32(1, (size_t)K * N), a.i32(2, (size_t)(K / b) * (N / b)),
                     a.f32(3, (size_t)M * N), (parts & 1) ? a.f32(4, (size_t)M * K) : nullptr,
                     (parts & 2) ? a.f32(5, (size_t)K * N) : nullptr, (int)M, (int)K, (int)N, (int)b, max_threads());
  });
}

static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  return guard(env, [&] {
    Args a(env, info, 1);
    const long t = a.integer(0);
#if PF_OMP_SHIM
    if (!omp_init()) return;  // no OpenMP runtime: one thread (info().openmpNote says why)
#endif
    if (t >= 1) g_threads = (int)t;
  });
}

static napi_value str_array(napi_env env, const std::vector<std::string>& v) {
  napi_value arr;
  napi_create_array_with_length(env, v.size(), &arr);
  for (size_t i = 0; i < v.size(); i++) {
    napi_value e;
    napi_create_string_utf8(env, v[i].c_str(), NAPI_AUTO_LENGTH, &e);
    napi_set_element(env, arr, (uint32_t)i, e);
  }
  return arr;
}

// info() -> { threads, simd, openmp, openmpNote?, simdCompiled, simdSupported, simdNote? }: simd is
// the variant the kernels run (chosen at load, dispatch.cc), simdCompiled the variants this binary
// has, simdSupported those this CPU runs, simdNote why PATCHFLOW_SIMD was not followed; openmp
// whether the kernels run multi-threaded, openmpNote why not (omp_shim.cc).
static napi_value js_info(napi_env env, napi_callback_info) {
  const Dispatch& d = select_kernels();
  napi_value o, t, s, mp;
  napi_create_object(env, &o);
  napi_create_int32(env, g_threads, &t);
  napi_create_string_utf8(env, kt().simd, NAPI_AUTO_LENGTH, &s);
#if PF_OMP_SHIM
  napi_get_boolean(env, omp_init(), &mp);
  if (*omp_note()) {
    napi_value n;
    napi_create_string_utf8(env, omp_note(), NAPI_AUTO_LENGTH, &n);
    napi_set_named_property(env, o, "openmpNote", n);
  }
#elif defined(_OPENMP)
  napi_get_boolean(env, true, &mp);
#else
  napi_get_boolean(env, false, &mp);
#endif
  napi_set_named_property(env, o, "threads", t);
  napi_set_named_property(env, o, "simd", s);
  napi_set_named_property(env, o, "openmp", mp);
  napi_set_named_property(env, o, "simdCompiled", str_array(env, d.compiled));
  napi_set_named_property(env, o, "simdSupported", str_array(env, d.supported));
  if (!d.note.empty()) {
    napi_value n;
    napi_create_string_utf8(env, d.note.c_str(), NAPI_AUTO_LENGTH, &n);
    napi_set_named_property(env, o, "simdNote", n);
  }
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
  pf::g_kernels = pf::select_kernels().table;
#if PF_OMP_SHIM
  pf::omp_init();  // before any parallel region: libgomp.so.1, or one thread
#endif
  int hw = 1;  // omp_get_num_procs: the shim's is 1 without libgomp
#ifdef _OPENMP
  hw = omp_get_num_procs();
#endif
  pf::g_threads = hw > 0 ? hw : 1;
  if (const char* e = std::getenv("PATCHFLOW_THREADS")) {
    const int t = std::atoi(e);
    if (t >= 1) pf::g_threads = t;
  }
#if PF_OMP_SHIM
  if (!pf::omp_init()) pf::g_threads = 1;
#endif
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
