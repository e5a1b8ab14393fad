// patchflow cpu: the kernel table, one per ISA variant (isa.h), and the state the variants share.
//
// Each variant's table.cc fills a KernelTable with its own functions (pf::<variant>::table);
// dispatch.cc picks one table when the addon loads and bindings.cc calls every kernel through it.
// The function signatures are those of kernels.h, gemm.h and blocksparse.h (table.cc would not
// compile otherwise).
#pragma once
#include <cstdint>

namespace pf {

// Worker threads the kernels use: PATCHFLOW_THREADS or every core at load, setThreads() later.
// Defined in bindings.cc; read by the kernels of every variant.
extern int g_threads;

struct KernelTable {
  const char* variant;  // the PF_ISA this table was compiled as: "scalar", "avx2" or "avx512"
  const char* simd;     // the SIMD paths its code took (gemm.h simd_level()); equals `variant` on x86-64

  // matmul.cc
  void (*matmul)(int batch, int batchA, int batchB, int M, int N, int K, bool ta, bool tb, const float* A,
                 const float* B, float* C, const float* bias, int act, float alpha);
  // kernels.cc
  void (*gelu)(const float* x, float* y, long n);
  void (*gelu_grad)(const float* x, const float* dy, float* dx, long n);
  void (*layernorm)(const float* x, const float* g, const float* b, float eps, long rows, int C, float* y, float* mean,
                    float* rstd);
  void (*layernorm_grad)(const float* dy, const float* x, const float* g, const float* mean, const float* rstd,
                         long rows, int C, float* dx, float* dg, float* db);
  void (*softmax)(const float* x, float* y, long rows, int C);
  void (*xent)(const float* logits, const int32_t* labels, long N, int V, int K, float* loss, float* lse);
  void (*xent_grad)(const float* logits, const int32_t* labels, const float* lse, const float* dy, long N, int V, int K,
                    float* dlogits);
  void (*attention)(const float* q, const float* k, const float* v, long BH, int T, int D, float scale, float* out,
                    float* lse);
  void (*attention_grad)(const float* q, const float* k, const float* v, const float* out, const float* lse,
                         const float* dout, long BH, int T, int D, float scale, float* dq, float* dk, float* dv);
  void (*adamw)(const float* w, const float* g, const float* m, const float* v, long n, float scale, float b1,
                float b2, float eps, float decay, float stepSize, float bc2, float* wo, float* mo, float* vo);
  // tensor_ops.cc
  void (*segment_sum)(const float* x, const int32_t* ids, long S, long inner, long nseg, float* out);
  void (*transpose)(const uint32_t* x, const long* shape, const int* perm, int rank, uint32_t* out);
  void (*sum)(const float* x, long outer, long red, long inner, float* out);
  void (*binary)(int op, bool rev, const float* big, long n, const float* small, long ns, float* out);
  void (*copy_rows)(const uint32_t* src, long srcStride, uint32_t* dst, long dstStride, long rows, long cols);
  void (*add_row_bias)(float* y, const float* bias, long rows, long cols, int threads);
  // blocksparse.cc
  void (*block_sparse)(const float* x, const float* w, const int32_t* mask, float* y, int M, int K, int N, int b,
                       int threads);
  void (*block_sparse_grad)(const float* x, const float* w, const int32_t* mask, const float* dy, float* dx, float* dw,
                            int M, int K, int N, int b, int threads);
};

}  // namespace pf
