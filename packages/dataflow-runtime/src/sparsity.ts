/**
 * Weight-sparsity cost model. A masked matrix W [rows, cols] at sparsity S keeps density ρ = 1 - S of its
 * values. Every matmul that touches W (forward X·W, backward dX = dY·Wᵀ and the sampled dW = Xᵀ·dY at
 * the kept positions) executes ρ × the dense FLOPs, at `efficiency` × the dense matmul rate:
 *
 * | pattern | kept values | index bytes | efficiency (from the hardware's `sparsity` section) |
 * | --- | --- | --- | --- |
 * | dense | rows·cols | 0 | 1 |
 * | block:B (B×B blocks) | ρ·rows·cols | 4 per kept block (int32 block column) + 4 per block row | min(1, B / blockFullEfficiency) |
 * | nm:N:M (N kept of every M) | N/M·rows·cols | ceil(log2 M) bits per kept value | nmEfficiency["N:M"], else unstructuredEfficiency |
 * | unstructured | ρ·rows·cols | 4 per kept value (int32 column, CSR) + 4 per row | unstructuredEfficiency |
 *
 * Activations are not sparse, so a sparse matmul moves as many activation bytes as a dense one: its
 * operation intensity (FLOPs per byte) falls by ρ, which is the paper's point.
 */
import { ConfigError } from './model.js';

export type SparsityPattern = { kind: 'dense' } | { kind: 'unstructured' } | { kind: 'block'; block: number } | { kind: 'nm'; n: number; m: number };

export interface SparsityHardware {
  /** Fraction of the dense rate that unstructured sparse matmuls reach on their kept FLOPs. */
  unstructuredEfficiency: number;
  /** Block edge at and above which a block-sparse matmul runs at the dense rate per kept block. */
  blockFullEfficiency: number;
  /** Efficiency per N:M pattern with hardware support, e.g. {"2:4": 1}. */
  nmEfficiency?: Record<string, number>;
}

export function parsePattern(s: string | undefined): SparsityPattern {
  if (s === undefined || s === 'unstructured') return { kind: 'unstructured' };
  if (s === 'dense') return { kind: 'dense' };
  let m = /^block:(\d+)$/.exec(s);
  if (m) {
    const b = Number(m[1]);
    if (b < 1) throw new ConfigError(`sparsity pattern block size must be >= 1, got ${s}`);
    return { kind: 'block', block: b };
  }
  m = /^nm:(\d+):(\d+)$/.exec(s);
  if (m) {
    const n = Number(m[1]);
    const mm = Number(m[2]);
    if (!(n >= 1 && mm > n)) throw new ConfigError(`sparsity pattern nm:N:M needs 1 <= N < M, got ${s}`);
    return { kind: 'nm', n, m: mm };
  }
  throw new ConfigError(`invalid sparsity pattern "${s}" (use unstructured, block:B or nm:N:M)`);
}

export function patternName(p: SparsityPattern): string {
  switch (p.kind) {
    case 'dense':
    case 'unstructured':
      return p.kind;
    case 'block':
      return `block:${p.block}`;
    case 'nm':
      return `nm:${p.n}:${p.m}`;
  }
}

/** Density kept for a sparsity S and pattern (N:M fixes it at N/M; S must agree or be omitted). */
export function densityOf(sparsity: number | undefined, p: SparsityPattern): number {
  if (p.kind === 'nm') {
    const d = p.n / p.m;
    if (sparsity !== undefined && sparsity > 0 && Math.abs(1 - sparsity - d) > 1e-9) {
      throw new ConfigError(`sparsity ${sparsity} does not match pattern nm:${p.n}:${p.m} (which keeps ${d})`);
    }
    return d;
  }
  const s = sparsity ?? 0;
  if (!(s >= 0 && s < 1)) throw new ConfigError(`sparsity must be in [0, 1), got ${sparsity}`);
  return p.kind === 'dense' ? 1 : 1 - s;
}

/** Bytes of the index/metadata of a masked matrix [rows, cols] at density ρ. */
export function indexBytes(rows: number, cols: number, density: number, p: SparsityPattern): number {
  if (density >= 1 || p.kind === 'dense') return 0;
  const kept = density * rows * cols;
  switch (p.kind) {
    case 'unstructured':
      return 4 * kept + 4 * (rows + 1);
    case 'block':
      return 4 * Math.ceil(kept / (p.block * p.block)) + 4 * (Math.ceil(rows / p.block) + 1);
    case 'nm':
      return Math.ceil((kept * Math.ceil(Math.log2(p.m))) / 8);
  }
}

/** Fraction of the dense matmul rate kept FLOPs run at. */
export function sparseEfficiency(density: number, p: SparsityPattern, hw: SparsityHardware): number {
  if (density >= 1 || p.kind === 'dense') return 1;
  switch (p.kind) {
    case 'unstructured':
      return hw.unstructuredEfficiency;
    case 'block':
      return Math.min(1, p.block / hw.blockFullEfficiency);
    case 'nm':
      return hw.nmEfficiency?.[`${p.n}:${p.m}`] ?? hw.unstructuredEfficiency;
  }
}
