// patchflow cpu: this ISA variant's kernel table (kernel_table.h), pf::<variant>::table. Compiled once
// per variant (isa.h); dispatch.cc picks one table when the addon loads.
#include "blocksparse.h"
#include "gemm.h"
#include "kernel_table.h"
#include "kernels.h"

#define PF_STR2(x) #x
#define PF_STR(x) PF_STR2(x)

namespace pf {
namespace PF_NS {

extern const KernelTable table;
const KernelTable table = {
    PF_STR(PF_ISA),
    simd_level(),
    matmul,
    gelu_fwd,
    gelu_bwd,
    layernorm_fwd,
    layernorm_bwd,
    softmax_rows,
    xent_fwd,
    xent_bwd,
    attn_fwd,
    attn_bwd,
    adamw_update,
    segment_sum,
    transpose4,
    reduce_sum,
    binary,
    copy_rows,
    add_row_bias,
    block_sparse_fwd,
    block_sparse_bwd,
};

}  // namespace PF_NS
}  // namespace pf
