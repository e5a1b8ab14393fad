// patchflow cpu: block-sparse matmul kernels (blocksparse.cc), reached through the kernel table
// (kernel_table.h) from the Node-API glue in bindings.cc.
//
// w [K,N] is masked by blockMask [K/b, N/b] (int32, non-zero = kept) expanded to b x b blocks (Wm).
// Only the kept blocks of w are read; the work scales with the number of kept blocks.
#pragma once
#include <cstdint>

#include "isa.h"

namespace pf {
namespace PF_NS {

// y[M,N] = x[M,K] @ Wm. Every element of y is written (zeros in column blocks with no kept block).
void block_sparse_fwd(const float* x, const float* w, const int32_t* mask, float* y, int M, int K, int N, int b,
                      int threads);

// dx[M,K] = dy[M,N] @ Wm^T and dw[K,N] = (x^T @ dy) masked: only the kept blocks are computed, every other
// element of dw is set to exactly 0. Every element of dx and dw is written. dx or dw may be null: not computed.
void block_sparse_bwd(const float* x, const float* w, const int32_t* mask, const float* dy, float* dx, float* dw, int M,
                      int K, int N, int b, int threads);

}  // namespace PF_NS
}  // namespace pf
