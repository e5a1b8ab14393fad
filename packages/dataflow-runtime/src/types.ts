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
