/** Types of the op graph, kernels, sections and simulation results (the JSON schema in README.md). */

/** Storage/compute types. `tf32` is stored as fp32 (4 bytes) but multiplies on TF32 tensor cores. */
export type DType = 'fp32' | 'tf32' | 'bf16' | 'int32' | 'uint8';
export type Precision = 'fp32' | 'tf32' | 'bf16';

export const DTYPE_BYTES: Record<DType, number> = { fp32: 4, tf32: 4, bf16: 2, int32: 4, uint8: 1 };

export type TensorRole =
  | 'input' // token ids
  | 'activation' // produced and consumed within the step, scales with rows
  | 'weight' // persistent parameter (fp32 master)
  | 'weight-compute' // per-step low-precision copy of a weight (bf16 runs)
  | 'sparse-index' // persistent index/metadata of a sparse weight
  | 'gradient' // parameter gradient
  | 'optimizer-state' // AdamW moments
  | 'scalar';

export interface TensorSpec {
  id: string;
  shape: number[];
  dtype: DType;
  /** Bytes of the whole tensor (sparse weights: kept values only; indices are a separate tensor). */
  bytes: number;
  role: TensorRole;
  /** True when the tensor has one slice per row (position) of the batch: it streams in micro-batch tiles. */
  perRow: boolean;
  /** Op index that writes it; null for tensors alive before the step (weights, states, inputs). */
  producer: number | null;
  /** Op indices that read it, ascending. */
  consumers: number[];
}

export type OpKind =
  | 'embedding'
  | 'patch-average'
  | 'layernorm'
  | 'matmul'
  | 'attention'
  | 'elementwise'
  | 'reduce'
  | 'cast'
  | 'loss'
  | 'optimizer';

export type Phase = 'forward' | 'backward' | 'optimizer';

export interface Access {
  tensor: string;
  /** Bytes of the tensor this op touches (less than the tensor for a gather/scatter). */
  bytes: number;
}

export interface SparseInfo {
  /** Fraction of weights kept (1 - S). */
  density: number;
  /** unstructured | block:B | nm:N:M; its rate on a chip comes from the hardware's sparsity section. */
  pattern: string;
}

/**
 * What an op computes, with its operands as tensor ids: the part of the graph an executor lowers to
 * kernels. Set on every op of the fused graph (`eager: false`); the extra kernels of the eager graph
 * (casts, helper reductions, copies) have none. Matmuls: out = op(a)·op(b) (+ bias); `param` names the
 * weight parameter a projection multiplies by (forward and dX) or whose gradient it writes (dW).
 */
export type OpSemantics =
  | { fn: 'embed'; table: string; ids: string; out: string }
  | { fn: 'patch-mean'; k: number; x: string; out: string }
  | { fn: 'add-positions'; x: string; pos: string; out: string }
  | { fn: 'layernorm'; x: string; gain: string; bias: string; out: string; stats: string }
  | { fn: 'matmul'; a: string; b: string; transA: boolean; transB: boolean; bias?: string; out: string; param?: string }
  | { fn: 'rotary'; x: string; out: string; inverse: boolean }
  | { fn: 'attention'; qkv: string; out: string; lse: string }
  | { fn: 'add'; a: string; b: string; out: string }
  | { fn: 'gelu'; x: string; out: string }
  | { fn: 'xent'; logits: string; labels: string; loss: string; lse: string }
  | { fn: 'xent-grad'; logits: string; lse: string; labels: string; out: string }
  | { fn: 'layernorm-grad'; dy: string; x: string; stats: string; gain: string; dx: string; dgain: string; dbias: string }
  | { fn: 'colsum'; x: string; out: string }
  | { fn: 'gelu-grad'; dy: string; x: string; out: string }
  | { fn: 'attention-grad'; qkv: string; out: string; lse: string; dout: string; dqkv: string }
  | { fn: 'positions-grad'; dy: string; out: string }
  | { fn: 'patch-mean-grad'; k: number; dy: string; out: string }
  | { fn: 'embed-grad'; ids: string; dy: string; out: string; add?: string }
  | { fn: 'cast'; x: string; out: string }
  | { fn: 'grad-norm'; grads: string[]; out: string }
  | { fn: 'adamw'; params: { name: string; w: string; g: string; m: string; v: string; decay: boolean; masked: boolean }[]; norm: string };

export interface OpSpec {
  index: number;
  id: string;
  kind: OpKind;
  phase: Phase;
  /** Transformer block, -1 before the blocks (embedding), nLayer after (final LN, head, loss), null for the optimizer. */
  layer: number | null;
  reads: Access[];
  writes: Access[];
  /** FLOPs executed (sparse matmuls: kept FLOPs only; causal attention: the unmasked half). */
  flops: number;
  /** Matmul FLOPs run on the matrix units at the precision's rate; the rest run on vector units. */
  matmulFlops: number;
  bytesRead: number;
  bytesWritten: number;
  /** Bytes read and written by dtype. */
  bytesByDtype: Partial<Record<DType, { read: number; write: number }>>;
  /** GEMM shape (rows M, cols N, reduction K) for matmuls, per batch entry; batch > 1 for batched matmuls. */
  gemm?: { m: number; n: number; k: number; batch: number };
  sparse?: SparseInfo;
  /** Processes rows (positions), so it streams micro-batches in a pipeline; false for per-parameter ops. */
  tiled: boolean;
  /** The math, for executors (see OpSemantics). */
  sem?: OpSemantics;
}

export interface GraphMeta {
  model: import('./model.js').GptShape;
  /** Sequences per micro-batch (one forward + backward of this graph). */
  batch: number;
  /** Forward + backward passes per optimizer step. */
  gradAccum: number;
  /** Positions the transformer sees per row (T). */
  positions: number;
  /** Tokens read per row (K·T). */
  tokensPerRow: number;
  patchSize: number;
  precision: Precision;
  /** The graph holds the ops PyTorch eager launches (GraphOptions.eager), not the fused step. */
  eager: boolean;
  sparsity: number;
  sparsityPattern: string;
  parameters: number;
  /** Parameters stored after sparsity (kept values). */
  keptParameters: number;
  /** Model FLOPs of the optimizer step by the trainer's convention (6·N_matmul + attention per token), dense. */
  modelFlops: number;
  /** FLOPs executed in the optimizer step (forward + backward × gradAccum, optimizer once). */
  executedFlops: number;
}

export interface StepGraph {
  meta: GraphMeta;
  tensors: TensorSpec[];
  ops: OpSpec[];
}
