// patchflow cpu: the kernels of one ISA variant (isa.h), by file. Every function works in place on
// arrays the caller owns (inputs and preallocated outputs); the Node-API glue (bindings.cc) has
// checked every length against the shapes before it calls one. Threads: OpenMP, pf::g_threads.
#pragma once
#include <cstdint>

#include "isa.h"
#include "kernel_table.h"

namespace pf {
namespace PF_NS {

static inline int max_threads() { return g_threads; }

// ---- matmul.cc: tfjs BatchMatMul / _FusedMatMul on gemm_st
// C[bi] = op(A[bi % batchA]) op(B[bi % batchB]), then + bias over the last axis, then activation `act`
// (Act below; alpha: leakyrelu's slope).
enum Act { ACT_LINEAR = 0, ACT_RELU = 1, ACT_RELU6 = 2, ACT_LEAKY = 3, ACT_ELU = 4, ACT_SIGMOID = 5 };
void matmul(int batch, int batchA, int batchB, int M, int N, int K, bool ta, bool tb, const float* A, const float* B,
            float* C, const float* bias, int act, float alpha);

// ---- kernels.cc: elementwise, normalisation, attention, loss and optimiser math
// GELU (tanh approximation) and its gradient dx = dy * gelu'(x).
void gelu_fwd(const float* x, float* y, long n);
void gelu_bwd(const float* x, const float* dy, float* dx, long n);
// LayerNorm over the last axis (C) of `rows` rows; saves mean and 1/std per row for the gradient.
void layernorm_fwd(const float* x, const float* g, const float* b, float eps, long rows, int C, float* y, float* mean,
                   float* rstd);
void layernorm_bwd(const float* dy, const float* x, const float* g, const float* mean, const float* rstd, long rows,
                   int C, float* dx, float* dg, float* db);
// Row softmax over the last axis (tfjs Softmax kernel: logits, dim = -1).
void softmax_rows(const float* x, float* y, long rows, int C);
// Cross-entropy of N rows of V logits against K labels per row (the mean over the K), and its gradient.
void xent_fwd(const float* logits, const int32_t* labels, long N, int V, int K, float* loss, float* lse);
void xent_bwd(const float* logits, const int32_t* labels, const float* lse, const float* dy, long N, int V, int K,
              float* dlogits);
// Causal attention over BH heads of T x D, flash-style (T x T never exists), and its gradient.
void attn_fwd(const float* q, const float* k, const float* v, long BH, int T, int D, float scale, float* out,
              float* lse);
void attn_bwd(const float* q, const float* k, const float* v, const float* out, const float* lse, const float* dout,
              long BH, int T, int D, float scale, float* dq, float* dk, float* dv);
// One AdamW update in a single pass (see ops.ts adamwUpdate).
void adamw_update(const float* w, const float* g, const float* m, const float* v, long n, float scale, float b1,
                  float b2, float eps, float decay, float stepSize, float bc2, float* wo, float* mo, float* vo);

// ---- tensor_ops.cc: data movement, reductions and broadcast arithmetic
// UnsortedSegmentSum: out[ids[i], :] += x[i, :] (out zeroed first; ids outside [0, nseg) dropped).
void segment_sum(const float* x, const int32_t* ids, long S, long inner, long nseg, float* out);
// Transpose of a rank <= 8 tensor of 4-byte elements.
void transpose4(const uint32_t* x, const long* shape, const int* perm, int rank, uint32_t* out);
// Sum over a contiguous block of axes: x viewed as [outer, red, inner] -> out [outer, inner].
void reduce_sum(const float* x, long outer, long red, long inner, float* out);
// out = big (op) small, small repeating over big's leading dims (BinOp below; rev: small is the left operand).
enum BinOp { OP_ADD = 0, OP_SUB = 1, OP_MUL = 2, OP_DIV = 3 };
void binary(int op, bool rev, const float* big, long n, const float* small, long ns, float* out);
// rows x cols 4-byte elements from src (row stride srcStride) to dst (row stride dstStride).
void copy_rows(const uint32_t* src, long srcStride, uint32_t* dst, long dstStride, long rows, long cols);
// y[r, :] += bias for r < rows (y is rows x cols).
void add_row_bias(float* y, const float* bias, long rows, long cols, int threads);

}  // namespace PF_NS
}  // namespace pf
