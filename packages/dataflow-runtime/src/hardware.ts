/** The hardware description the execution models read (format documented in @patchflow/backend-rdu-sim's README). */
import { ConfigError } from './model.js';
import type { SparsityHardware } from './sparsity.js';
import type { Precision } from './types.js';

export interface HardwareSpec {
  name: string;
  kind: 'gpu' | 'rdu';
  compute: {
    /** Peak dense matrix-unit rate per chip, TFLOP/s, by precision. */
    matmulTflops: Partial<Record<Precision, number>>;
    /** Rate of non-matmul (vector) FLOPs, TFLOP/s. */
    vectorTflops: number;
    /** Fraction of the peak an 8192×8192×8192 GEMM reaches (the reference shape; see execute.ts). */
    matmulEfficiency: Partial<Record<Precision, number>>;
    /** GPUs: parallel units (SMs) and the output tile each computes, for wave quantization. */
    units?: number;
    tile?: [number, number];
    /** GPUs: K-loop start-up cost in K elements (efficiency K / (K + kOverhead)). */
    kOverhead?: number;
    /**
     * GPUs: K depth of one MAC-loop iteration. When set, wave quantization counts work in tiles × K-iterations,
     * as stream-K / split-K GEMM kernels spread it over the SMs (cuBLAS on sm80/sm90), instead of whole tiles.
     */
    kTile?: number;
    /**
     * GPUs: measured rate of the fused attention kernel (scaled_dot_product_attention, causal) by precision and
     * head dimension, [forward, backward] TFLOP/s on its matmul FLOPs (4·B·T²·d·(T+1)/2T forward, 2.5× that
     * backward), kernel time only, at sequence length `seqLen`. Absent (or no entry for the precision): attention
     * runs at the GEMM rate like any matmul. See execute.ts for how other head dims and lengths are scaled.
     */
    attention?: { seqLen: number; tflops: Partial<Record<Precision, Record<string, [number, number]>>> };
  };
  onChip: { capacityBytes: number; bandwidthBytesPerSecond: number };
  offChip: { capacityBytes: number; bandwidthBytesPerSecond: number; /** achievable fraction */ efficiency: number };
  node: { chipsPerNode: number; linkBandwidthBytesPerSecond: number };
  execution: {
    /** Fixed cost of launching one kernel in KBK mode. */
    kernelOverheadSeconds: number;
    /** Fixed cost of loading one dataflow section (reconfiguration) in DF mode. */
    sectionOverheadSeconds: number;
    /** Rows (positions) per micro-batch tile that streams through a dataflow section. */
    dataflowTileRows: number;
    /** Kernel fusion the KBK mode gets on this chip: none (one op, one kernel, as PyTorch eager) or rules. */
    kbkFusion: 'none' | 'rules';
  };
  sparsity: SparsityHardware;
  /** Source of each number, keyed by its path (e.g. "compute.matmulTflops.bf16"). */
  sources: Record<string, string>;
}

function num(o: unknown, path: string, opts: { min?: number; max?: number; optional?: boolean; positive?: boolean } = {}): number | undefined {
  const v = path.split('.').reduce<unknown>((x, k) => (x && typeof x === 'object' ? (x as Record<string, unknown>)[k] : undefined), o);
  if (v === undefined && opts.optional) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`hardware ${path} must be a number, got ${JSON.stringify(v)}`);
  if (opts.positive !== false && v <= 0 && opts.min === undefined) throw new ConfigError(`hardware ${path} must be > 0, got ${v}`);
  if (opts.min !== undefined && v < opts.min) throw new ConfigError(`hardware ${path} must be >= ${opts.min}, got ${v}`);
  if (opts.max !== undefined && v > opts.max) throw new ConfigError(`hardware ${path} must be <= ${opts.max}, got ${v}`);
  return v;
}

/** Checks a parsed hardware JSON; throws ConfigError naming the first bad field. */
export function validateHardware(o: unknown): HardwareSpec {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new ConfigError('hardware description must be a JSON object');
  const h = o as Record<string, unknown>;
  if (typeof h.name !== 'string' || !h.name) throw new ConfigError('hardware name must be a non-empty string');
  if (h.kind !== 'gpu' && h.kind !== 'rdu') throw new ConfigError(`hardware kind must be "gpu" or "rdu", got ${JSON.stringify(h.kind)}`);
  for (const s of ['compute', 'onChip', 'offChip', 'node', 'execution', 'sparsity']) {
    if (typeof h[s] !== 'object' || h[s] === null) throw new ConfigError(`hardware ${s} must be an object`);
  }
  const mm = (h.compute as Record<string, unknown>).matmulTflops;
  if (typeof mm !== 'object' || mm === null || Object.keys(mm).length === 0) throw new ConfigError('hardware compute.matmulTflops must be an object with at least one precision');
  for (const k of Object.keys(mm)) {
    if (!['fp32', 'tf32', 'bf16'].includes(k)) throw new ConfigError(`hardware compute.matmulTflops.${k}: unknown precision (fp32, tf32, bf16)`);
    num(h, `compute.matmulTflops.${k}`);
    num(h, `compute.matmulEfficiency.${k}`, { max: 1 });
  }
  num(h, 'compute.vectorTflops');
  num(h, 'compute.units', { optional: true });
  num(h, 'compute.kOverhead', { optional: true, min: 0 });
  num(h, 'compute.kTile', { optional: true, min: 1 });
  const att = (h.compute as Record<string, unknown>).attention;
  if (att !== undefined) {
    if (typeof att !== 'object' || att === null) throw new ConfigError('hardware compute.attention must be an object {"seqLen": T, "tflops": {...}}');
    num(h, 'compute.attention.seqLen', { min: 1 });
    const tf = (att as Record<string, unknown>).tflops;
    if (typeof tf !== 'object' || tf === null) throw new ConfigError('hardware compute.attention.tflops must be an object like {"bf16": {"128": [forward, backward]}}');
    for (const [prec, byHd] of Object.entries(tf)) {
      if (!['fp32', 'tf32', 'bf16'].includes(prec)) throw new ConfigError(`hardware compute.attention.tflops.${prec}: unknown precision (fp32, tf32, bf16)`);
      if (typeof byHd !== 'object' || byHd === null || Object.keys(byHd).length === 0) throw new ConfigError(`hardware compute.attention.tflops.${prec} must map head dims to [forward, backward] TFLOP/s`);
      for (const [hd, v] of Object.entries(byHd)) {
        if (!/^[1-9][0-9]*$/.test(hd)) throw new ConfigError(`hardware compute.attention.tflops.${prec}.${hd}: the key must be a head dimension (an integer)`);
        if (!(Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0))) {
          throw new ConfigError(`hardware compute.attention.tflops.${prec}.${hd} must be [forward, backward] TFLOP/s > 0, got ${JSON.stringify(v)}`);
        }
      }
    }
  }
  const tile = (h.compute as Record<string, unknown>).tile;
  if (tile !== undefined && !(Array.isArray(tile) && tile.length === 2 && tile.every((x) => typeof x === 'number' && x >= 1))) {
    throw new ConfigError(`hardware compute.tile must be [rows, cols], got ${JSON.stringify(tile)}`);
  }
  num(h, 'onChip.capacityBytes');
  num(h, 'onChip.bandwidthBytesPerSecond');
  num(h, 'offChip.capacityBytes');
  num(h, 'offChip.bandwidthBytesPerSecond');
  num(h, 'offChip.efficiency', { max: 1 });
  num(h, 'node.chipsPerNode', { min: 1 });
  num(h, 'node.linkBandwidthBytesPerSecond');
  num(h, 'execution.kernelOverheadSeconds', { min: 0 });
  num(h, 'execution.sectionOverheadSeconds', { min: 0 });
  num(h, 'execution.dataflowTileRows', { min: 1 });
  const f = (h.execution as Record<string, unknown>).kbkFusion;
  if (f !== 'none' && f !== 'rules') throw new ConfigError(`hardware execution.kbkFusion must be "none" or "rules", got ${JSON.stringify(f)}`);
  num(h, 'sparsity.unstructuredEfficiency', { max: 1 });
  num(h, 'sparsity.blockFullEfficiency', { min: 1 });
  const nm = (h.sparsity as Record<string, unknown>).nmEfficiency;
  if (nm !== undefined) {
    if (typeof nm !== 'object' || nm === null) throw new ConfigError('hardware sparsity.nmEfficiency must be an object like {"2:4": 1}');
    for (const k of Object.keys(nm)) num(h, `sparsity.nmEfficiency.${k}`, { max: 1 });
  }
  if (h.sources !== undefined && (typeof h.sources !== 'object' || h.sources === null)) throw new ConfigError('hardware sources must be an object of path -> citation');
  return { ...(o as HardwareSpec), sources: (h.sources as Record<string, string>) ?? {} };
}

/** Paths of every number in a hardware description (for checking that each has a source). */
export function numericPaths(o: unknown, prefix = ''): string[] {
  if (typeof o === 'number') return [prefix];
  if (Array.isArray(o)) return o.some((x) => typeof x === 'number') ? [prefix] : [];
  if (typeof o !== 'object' || o === null) return [];
  return Object.entries(o).flatMap(([k, v]) => (k === 'sources' && !prefix ? [] : numericPaths(v, prefix ? `${prefix}.${k}` : k)));
}

/**
 * Whether a simulation of `mode` on this chip should build the eager op graph (GraphOptions.eager): KBK on a chip
 * whose KBK mode is one op per kernel (execution.kbkFusion "none", i.e. PyTorch eager on a GPU).
 */
export function eagerKbk(hw: HardwareSpec, mode: 'kbk' | 'dataflow'): boolean {
  return mode === 'kbk' && hw.execution.kbkFusion === 'none';
}
