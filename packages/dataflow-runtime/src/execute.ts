/**
 * Fusion pass, pipeline pass, and the two execution models (KBK and DF) over a step graph.
 *
 * Cost model of one op on a chip (stated in README.md):
 *   compute   = matmulFlops / (peak[precision] · eff) + otherFlops / vectorRate
 *     eff     = matmulEfficiency[precision] · shape(op) / shape(8192³) · sparseEfficiency
 *     shape   = wave quantization · K-loop start-up (GPUs; 1 elsewhere):
 *               work / (ceil(work / units) · units) · K / (K + kOverhead), where work = output tiles
 *               (ceil(M/tileM) · ceil(N/tileN) · batch), times ceil(K / kTile) K-iterations when the chip's
 *               GEMM library splits K over idle SMs (stream-K / split-K; compute.kTile set)
 *   attention = on a chip with a measured attention rate (compute.attention, the fused SDPA kernel):
 *               matmulFlops / (rate[precision][head dim][forward|backward] · shape(op) / kLoop(seqLen)),
 *               rate at the nearest measured head dim, shape with M = T query rows, N = head dim,
 *               K = T keys, batch = B·heads (so a shorter T pays the K-loop start-up over fewer keys);
 *               the softmax's vector FLOPs run inside that kernel and are not added
 *   on-chip   = bytes read + written by the op + matmul operand re-reads from tiles (MNK · bytes · (1/tileM + 1/tileN))
 *   off-chip  = bytes of the tensors that cross the kernel (KBK) or section (DF) boundary
 * A kernel or section takes max(compute, on-chip / on-chip BW, off-chip / (off-chip BW · efficiency)) plus its fixed overhead,
 * and that max names its bound.
 */
import type { HardwareSpec } from './hardware.js';
import { parsePattern, sparseEfficiency } from './sparsity.js';
import type { OpSpec, StepGraph, TensorRole, TensorSpec } from './types.js';
import { memoryProfile } from './graph.js';
import { ConfigError } from './model.js';

export type Bound = 'compute' | 'on-chip bandwidth' | 'off-chip bandwidth' | 'overhead';

export interface Kernel {
  index: number;
  id: string;
  /** Op indices, contiguous in step order. */
  ops: number[];
  phase: OpSpec['phase'];
  /** On-chip bytes the kernel needs in DF (weights resident, double-buffered tiles). */
  footprintBytes: number;
}

export interface Section {
  index: number;
  /** Kernel indices, contiguous. */
  kernels: number[];
  footprintBytes: number;
  /** Alone and larger than on-chip memory: its weights are re-read from off-chip for every micro-batch. */
  streaming: boolean;
  /** Pipeline depth p (tiled kernels) and micro-batches m; GPipe fill/drain bubble = (p - 1) / (m + p - 1). */
  depth: number;
  microBatches: number;
  bubble: number;
}

export interface FusionOptions {
  policy: 'none' | 'rules';
  budgetBytes: number;
  tileRows: number;
}

const EPILOGUE: OpSpec['kind'][] = ['elementwise', 'reduce', 'cast'];

function tensorMap(g: StepGraph): Map<string, TensorSpec> {
  return new Map(g.tensors.map((t) => [t.id, t]));
}

/**
 * On-chip bytes a group of ops needs when its tiled ops stream m micro-batches through it as a pipeline
 * (`stage(op)` = its pipeline stage). A weight read whole by a tiled op stays resident; an activation
 * crossing the group is double-buffered (2 tiles); one produced and consumed inside waits
 * (distance + 1) tiles, capped at the whole tensor; a weight gradient accumulates in place (whole).
 * Gathers and per-parameter ops (optimizer) stream in tiles. `resident: false` (KBK) streams weights too.
 */
export function footprint(g: StepGraph, T: Map<string, TensorSpec>, ops: number[], stage: (op: number) => number, m: number, resident = true): number {
  const inSet = new Set(ops);
  const seen = new Map<string, number>();
  for (const oi of ops) {
    const o = g.ops[oi]!;
    for (const a of o.reads) {
      const t = T.get(a.tensor)!;
      let need: number;
      if (t.producer !== null && inSet.has(t.producer)) {
        if (!t.perRow) need = g.ops[t.producer]!.tiled ? t.bytes : 0;
        else {
          let last = stage(t.producer);
          for (const c of t.consumers) if (inSet.has(c)) last = Math.max(last, stage(c));
          const dist = Math.max(1, last - stage(t.producer));
          need = Math.min(t.bytes, (dist + 1) * (t.bytes / m));
        }
      } else if (!t.perRow && o.tiled && a.bytes >= t.bytes && resident) need = t.bytes;
      else if (!o.tiled) need = 0;
      else need = 2 * (a.bytes / m);
      seen.set(t.id, Math.max(seen.get(t.id) ?? 0, need));
    }
    for (const a of o.writes) {
      const t = T.get(a.tensor)!;
      if (seen.has(t.id)) continue;
      let need = 0;
      if (!o.tiled) need = 0;
      else if (!t.perRow) need = resident ? t.bytes : 2 * (a.bytes / m);
      else need = 2 * (t.bytes / m);
      seen.set(t.id, need);
    }
  }
  let s = 0;
  for (const v of seen.values()) s += v;
  return s;
}

function microBatches(g: StepGraph, tileRows: number): number {
  return Math.max(1, Math.ceil((g.meta.batch * g.meta.positions) / tileRows));
}

/** Groups ops into kernels: matmul + epilogue, LayerNorm, attention, elementwise chains; within the budget. */
export function fuse(g: StepGraph, opts: FusionOptions): Kernel[] {
  const T = tensorMap(g);
  const m = microBatches(g, opts.tileRows);
  const kernels: Kernel[] = [];
  let cur: number[] = [];
  const close = () => {
    if (!cur.length) return;
    const first = g.ops[cur[0]!]!;
    kernels.push({ index: kernels.length, id: cur.map((i) => g.ops[i]!.id).join(' + '), ops: cur, phase: first.phase, footprintBytes: footprint(g, T, cur, (i) => i, m) });
    cur = [];
  };
  for (const o of g.ops) {
    if (opts.policy === 'rules' && cur.length) {
      const head = g.ops[cur[0]!]!;
      const producedHere = new Set(cur.flatMap((i) => g.ops[i]!.writes.map((w) => w.tensor)));
      const readHere = new Set(cur.flatMap((i) => g.ops[i]!.reads.map((r) => r.tensor)));
      const chain = o.reads.some((r) => producedHere.has(r.tensor) && T.get(r.tensor)!.perRow);
      const sibling = o.kind === 'reduce' && o.reads.some((r) => readHere.has(r.tensor) && T.get(r.tensor)!.perRow);
      const canLead = head.kind === 'matmul' || head.kind === 'elementwise' || head.kind === 'patch-average' || head.kind === 'embedding';
      if (EPILOGUE.includes(o.kind) && o.phase === head.phase && o.tiled === head.tiled && canLead && (chain || sibling)) {
        const cand = [...cur, o.index];
        if (footprint(g, T, cand, (i) => i, m) <= opts.budgetBytes) {
          cur = cand;
          continue;
        }
      }
    }
    close();
    cur = [o.index];
  }
  close();
  return kernels;
}

/** Packs consecutive kernels into dataflow sections (pipeline stages of one chip configuration) within the on-chip capacity. */
export function pipeline(g: StepGraph, kernels: Kernel[], capacityBytes: number, tileRows: number): Section[] {
  const T = tensorMap(g);
  const m = microBatches(g, tileRows);
  const sections: Section[] = [];
  let cur: number[] = [];
  let curFoot = 0;
  const opsOf = (ks: number[]) => ks.flatMap((k) => kernels[k]!.ops);
  const stageOf = (ks: number[]) => {
    const s = new Map<number, number>();
    ks.forEach((k, i) => kernels[k]!.ops.forEach((o) => s.set(o, i)));
    return (o: number) => s.get(o) ?? 0;
  };
  const close = (streaming = false) => {
    if (!cur.length) return;
    const depth = cur.filter((k) => g.ops[kernels[k]!.ops[0]!]!.tiled).length;
    sections.push({ index: sections.length, kernels: cur, footprintBytes: curFoot, streaming, depth, microBatches: m, bubble: depth > 0 ? (depth - 1) / (m + depth - 1) : 0 });
    cur = [];
    curFoot = 0;
  };
  for (const k of kernels) {
    if (g.meta.gradAccum > 1 && cur.length && kernels[cur[cur.length - 1]!]!.phase !== 'optimizer' && k.phase === 'optimizer') close();
    const cand = [...cur, k.index];
    const f = footprint(g, T, opsOf(cand), stageOf(cand), m);
    if (f <= capacityBytes) {
      cur = cand;
      curFoot = f;
      continue;
    }
    close();
    const alone = footprint(g, T, k.ops, (o) => o, m);
    cur = [k.index];
    curFoot = alone;
    if (alone > capacityBytes) close(true);
  }
  close();
  return sections;
}

// ---------------------------------------------------------------- execution

export interface OpTime {
  computeSeconds: number;
  onChipBytes: number;
  offChipBytes: number;
}

export interface GroupResult {
  group: string;
  ops: number;
  kernels: number;
  flops: number;
  seconds: number;
  offChipBytes: number;
  onChipBytes: number;
  computeSeconds: number;
  onChipSeconds: number;
  offChipSeconds: number;
  bound: Bound;
}

export interface UnitResult {
  /** Kernel (KBK) or section (DF) index. */
  index: number;
  id: string;
  ops: number;
  seconds: number;
  computeSeconds: number;
  onChipSeconds: number;
  offChipSeconds: number;
  offChipBytes: number;
  footprintBytes: number;
  bound: Bound;
  bubble?: number;
  streaming?: boolean;
  /** DF: pipelined, or sequential when running the section's kernels one after another is faster. */
  schedule?: 'pipelined' | 'sequential';
}

export interface SimulationResult {
  schema: 'patchflow.simulation/1';
  mode: 'kbk' | 'dataflow';
  hardware: string;
  model: StepGraph['meta'];
  stepSeconds: number;
  tokensPerSecond: number;
  /** Executed FLOPs / (step time · peak matmul rate). */
  utilization: number;
  /** Model FLOPs (dense, trainer convention) / (step time · peak): the "MFU". */
  modelFlopsUtilization: number;
  executedFlops: number;
  offChipBytes: number;
  offChipBytesByRole: Partial<Record<TensorRole, number>>;
  onChipPeakBytes: number;
  memory: { persistentBytes: number; peakBytes: number; savedActivationBytes: number; capacityBytes: number; fits: boolean };
  phases: Record<string, number>;
  bound: Bound;
  groups: GroupResult[];
  units: UnitResult[];
  kernels: number;
  sections?: number;
  warnings: string[];
}

/** Fraction of the SMs' slots busy over the waves of a GEMM-like kernel (1 on chips without units/tile). */
export function waveQuantization(hw: HardwareSpec, m: number, n: number, k: number, batch: number): number {
  const c = hw.compute;
  if (!c.units || !c.tile) return 1;
  const tiles = Math.ceil(m / c.tile[0]) * Math.ceil(n / c.tile[1]) * batch;
  const work = c.kTile ? tiles * Math.ceil(k / c.kTile) : tiles;
  return work / (Math.ceil(work / c.units) * c.units);
}

/** K-loop start-up: K / (K + kOverhead) (1 on chips without kOverhead). */
function kLoop(hw: HardwareSpec, k: number): number {
  return hw.compute.kOverhead ? k / (k + hw.compute.kOverhead) : 1;
}

export function shapeFactor(hw: HardwareSpec, m: number, n: number, k: number, batch: number): number {
  return waveQuantization(hw, m, n, k, batch) * kLoop(hw, k);
}

/**
 * Rate (TFLOP/s) of a fused attention op from the chip's measured attention table, or undefined when the chip
 * has none for this precision: the entry of the nearest head dim (by ratio), forward or backward, scaled by
 * shape(op) / kLoop(seqLen) (the measurement's own quantization is taken as 1: it ran many waves).
 */
export function attentionRate(o: OpSpec, hw: HardwareSpec, precision: StepGraph['meta']['precision']): number | undefined {
  const a = hw.compute.attention;
  const table = a?.tflops[precision];
  if (!a || !table || o.kind !== 'attention' || o.matmulFlops <= 0 || !o.gemm) return undefined;
  const hd = o.gemm.n;
  let best = '';
  for (const k of Object.keys(table)) if (!best || Math.abs(Math.log(Number(k) / hd)) < Math.abs(Math.log(Number(best) / hd))) best = k;
  const [fwd, bwd] = table[best]!;
  const g = o.gemm;
  return (o.phase === 'backward' ? bwd : fwd) * (shapeFactor(hw, g.m, g.n, g.k, g.batch) / kLoop(hw, a.seqLen));
}

export function opCost(o: OpSpec, hw: HardwareSpec, precision: StepGraph['meta']['precision']): { computeSeconds: number; onChipBytes: number } {
  const peak = hw.compute.matmulTflops[precision];
  const base = hw.compute.matmulEfficiency[precision];
  if (peak === undefined || base === undefined) throw new ConfigError(`hardware ${hw.name} has no compute.matmulTflops.${precision}`);
  const att = attentionRate(o, hw, precision);
  // measured fused attention: its own rate; softmax FLOPs and operand re-reads are inside the measured kernel time
  if (att !== undefined) return { computeSeconds: o.matmulFlops / (att * 1e12), onChipBytes: o.bytesRead + o.bytesWritten };
  let compute = (o.flops - o.matmulFlops) / (hw.compute.vectorTflops * 1e12);
  let onChip = o.bytesRead + o.bytesWritten;
  if (o.matmulFlops > 0) {
    const gm = o.gemm ?? { m: 1, n: 1, k: 1, batch: 1 };
    let eff = base * (shapeFactor(hw, gm.m, gm.n, gm.k, gm.batch) / shapeFactor(hw, 8192, 8192, 8192, 1));
    if (o.sparse) eff *= sparseEfficiency(o.sparse.density, parsePattern(o.sparse.pattern), hw.sparsity);
    compute += o.matmulFlops / (peak * 1e12 * eff);
    const tile = hw.compute.tile ?? [128, 128];
    const eb = precision === 'bf16' ? 2 : 4;
    onChip += (o.matmulFlops / 2) * eb * (1 / tile[0] + 1 / tile[1]);
  }
  return { computeSeconds: compute, onChipBytes: onChip };
}

/** Off-chip bytes of a group of ops run as one unit, attributed per op, by tensor role. */
function boundaryTraffic(g: StepGraph, T: Map<string, TensorSpec>, ops: number[], weightRepeats: number): { perOp: Map<number, number>; byRole: Partial<Record<TensorRole, number>> } {
  const inSet = new Set(ops);
  const perOp = new Map<number, number>();
  const byRole: Partial<Record<TensorRole, number>> = {};
  const readOnce = new Map<string, { op: number; bytes: number }>();
  for (const oi of ops) {
    const o = g.ops[oi]!;
    for (const a of o.reads) {
      const t = T.get(a.tensor)!;
      if (t.producer !== null && inSet.has(t.producer)) continue;
      const prev = readOnce.get(t.id);
      if (!prev || prev.bytes < a.bytes) readOnce.set(t.id, { op: oi, bytes: a.bytes });
    }
    for (const a of o.writes) {
      const t = T.get(a.tensor)!;
      const external = t.consumers.length === 0 || t.consumers.some((c) => !inSet.has(c));
      if (!external) continue;
      perOp.set(oi, (perOp.get(oi) ?? 0) + a.bytes);
      byRole[t.role] = (byRole[t.role] ?? 0) + a.bytes;
    }
  }
  for (const [tid, r] of readOnce) {
    const t = T.get(tid)!;
    const rep = !t.perRow && g.ops[r.op]!.tiled && t.producer === null ? weightRepeats : 1;
    perOp.set(r.op, (perOp.get(r.op) ?? 0) + r.bytes * rep);
    byRole[t.role] = (byRole[t.role] ?? 0) + r.bytes * rep;
  }
  return { perOp, byRole };
}

function groupOf(o: OpSpec): string {
  if (o.kind === 'matmul') return `matmul ${o.phase}`;
  if (o.kind === 'attention') return `attention ${o.phase}`;
  return o.kind === 'patch-average' ? 'embedding' : o.kind;
}

function boundOf(c: number, on: number, off: number, overhead = 0): Bound {
  const mx = Math.max(c, on, off);
  if (overhead > mx) return 'overhead';
  return mx === c ? 'compute' : mx === off ? 'off-chip bandwidth' : 'on-chip bandwidth';
}

export interface SimulateOptions {
  mode: 'kbk' | 'dataflow';
  /** Override the fusion policy (default: the hardware's execution.kbkFusion for KBK, rules for DF). */
  fusion?: 'none' | 'rules';
}

export interface Plan {
  kernels: Kernel[];
  sections: Section[];
}

/** Fusion (and for DF, pipeline) for a graph on a chip. */
export function plan(g: StepGraph, hw: HardwareSpec, opts: SimulateOptions): Plan {
  const tileRows = hw.execution.dataflowTileRows;
  const policy = opts.fusion ?? (opts.mode === 'kbk' ? hw.execution.kbkFusion : 'rules');
  const kernels = fuse(g, { policy, budgetBytes: hw.onChip.capacityBytes, tileRows });
  const sections = opts.mode === 'dataflow' ? pipeline(g, kernels, hw.onChip.capacityBytes, tileRows) : kernels.map((k) => ({ index: k.index, kernels: [k.index], footprintBytes: k.footprintBytes, streaming: false, depth: 1, microBatches: 1, bubble: 0 }));
  return { kernels, sections };
}

/** Per-op costs and the rates every part of a simulation reads. */
interface SimContext {
  g: StepGraph;
  hw: HardwareSpec;
  p: Plan;
  T: Map<string, TensorSpec>;
  cost: { computeSeconds: number; onChipBytes: number }[];
  onBW: number;
  offBW: number;
  kbk: boolean;
}

/** Time of a set of ops run as one unit: the max of compute (tiled ops × the pipeline factor), on-chip and off-chip traffic, plus an overhead. */
function runTime(c: SimContext, ops: number[], streamingRepeat: number, pipe: number, overhead: number) {
  const tr = boundaryTraffic(c.g, c.T, ops, streamingRepeat);
  let tiled = 0, untiled = 0, on = 0, off = 0;
  for (const oi of ops) {
    const cost = c.cost[oi]!;
    if (c.g.ops[oi]!.tiled) tiled += cost.computeSeconds;
    else untiled += cost.computeSeconds;
    on += cost.onChipBytes;
    off += tr.perOp.get(oi) ?? 0;
  }
  const compute = tiled * pipe + untiled;
  const onS = on / c.onBW;
  const offS = off / c.offBW;
  return { ops, secs: Math.max(compute, onS, offS) + overhead, compute, onS, offS, off, perOp: tr.perOp, byRole: tr.byRole, overhead, pipe };
}

/**
 * Runs every section (KBK: every kernel) and attributes its time to its ops by their own roofline
 * times: the units of the result, and per-op time and off-chip bytes for the group breakdown.
 */
function runSections(c: SimContext) {
  const { g, hw, p, kbk } = c;
  const mKbk = microBatches(g, 128);
  const units: UnitResult[] = [];
  const opOff = new Array<number>(g.ops.length).fill(0);
  const opShare = new Array<number>(g.ops.length).fill(0);
  const byRole: Partial<Record<TensorRole, number>> = {};
  const phases: Record<string, number> = {};
  let onChipPeak = 0;
  let total = 0;
  let totalOff = 0;
  for (const s of p.sections) {
    const ops = s.kernels.flatMap((k) => p.kernels[k]!.ops);
    const sequential = () => s.kernels.map((k) => runTime(c, p.kernels[k]!.ops, 1, 1, hw.execution.kernelOverheadSeconds));
    let runs = kbk ? sequential() : [runTime(c, ops, s.streaming ? s.microBatches : 1, s.depth === 0 ? 1 : (s.microBatches + s.depth - 1) / s.microBatches, hw.execution.sectionOverheadSeconds)];
    let schedule: 'pipelined' | 'sequential' = kbk ? 'sequential' : 'pipelined';
    if (!kbk && s.kernels.length > 1) {
      // the compiler keeps whichever is faster: the pipelined section, or its kernels one after another
      const seq = sequential();
      if (seq.reduce((a, r) => a + r.secs, 0) < runs[0]!.secs) {
        runs = seq;
        schedule = 'sequential';
      }
    }
    const repeat = ops.every((oi) => g.ops[oi]!.phase === 'optimizer') ? 1 : g.meta.gradAccum;
    let secs = 0, compute = 0, onS = 0, offS = 0, off = 0, overhead = 0;
    for (const r of runs) {
      secs += r.secs * repeat;
      compute += r.compute * repeat;
      onS += r.onS * repeat;
      offS += r.offS * repeat;
      off += r.off * repeat;
      overhead += r.overhead * repeat;
      for (const [role, v] of Object.entries(r.byRole)) byRole[role as TensorRole] = (byRole[role as TensorRole] ?? 0) + v * repeat;
      for (const oi of r.ops) opOff[oi] = (r.perOp.get(oi) ?? 0) * repeat;
      const own = r.ops.map((oi) => Math.max(c.cost[oi]!.computeSeconds * (g.ops[oi]!.tiled ? r.pipe : 1) * repeat, (c.cost[oi]!.onChipBytes * repeat) / c.onBW, opOff[oi]! / c.offBW));
      const sum = own.reduce((a, b) => a + b, 0) || 1;
      r.ops.forEach((oi, i) => {
        opShare[oi] = (r.secs * repeat * own[i]!) / sum;
        const ph = g.ops[oi]!.phase;
        phases[ph] = (phases[ph] ?? 0) + opShare[oi]!;
      });
    }
    const foot = Math.min(hw.onChip.capacityBytes, schedule === 'sequential' ? Math.max(...s.kernels.map((k) => footprint(g, c.T, p.kernels[k]!.ops, (o) => o, mKbk, kbk ? false : true))) : s.footprintBytes);
    onChipPeak = Math.max(onChipPeak, foot);
    units.push({
      index: s.index, id: kbk ? p.kernels[s.kernels[0]!]!.id : `section ${s.index} (${ops.length} ops: ${g.ops[ops[0]!]!.id} .. ${g.ops[ops.at(-1)!]!.id})`,
      ops: ops.length, seconds: secs, computeSeconds: compute, onChipSeconds: onS, offChipSeconds: offS, offChipBytes: off, footprintBytes: foot,
      bound: boundOf(compute, onS, offS, overhead), ...(kbk ? {} : { bubble: s.bubble, streaming: s.streaming, schedule }),
    });
    total += secs;
    totalOff += off;
  }
  return { units, opOff, opShare, byRole, phases, onChipPeak, total, totalOff };
}

/** Time, FLOPs and traffic by op group (matmul, attention, ...), most time first. */
function groupBreakdown(c: SimContext, opShare: number[], opOff: number[]): GroupResult[] {
  const { g, p } = c;
  const groups = new Map<string, GroupResult>();
  const kernelOf = new Map<number, number>();
  p.kernels.forEach((k) => k.ops.forEach((o) => kernelOf.set(o, k.index)));
  const kernelsIn = new Map<string, Set<number>>();
  for (const o of g.ops) {
    const name = groupOf(o);
    const gr = groups.get(name) ?? { group: name, ops: 0, kernels: 0, flops: 0, seconds: 0, offChipBytes: 0, onChipBytes: 0, computeSeconds: 0, onChipSeconds: 0, offChipSeconds: 0, bound: 'compute' as Bound };
    gr.ops++;
    gr.flops += o.flops;
    gr.seconds += opShare[o.index]!;
    gr.offChipBytes += opOff[o.index]!;
    const rep = o.phase === 'optimizer' ? 1 : g.meta.gradAccum;
    gr.flops += o.flops * (rep - 1);
    gr.onChipBytes += c.cost[o.index]!.onChipBytes * rep;
    gr.computeSeconds += c.cost[o.index]!.computeSeconds * rep;
    groups.set(name, gr);
    (kernelsIn.get(name) ?? kernelsIn.set(name, new Set()).get(name)!).add(kernelOf.get(o.index)!);
  }
  for (const gr of groups.values()) {
    gr.kernels = kernelsIn.get(gr.group)!.size;
    gr.onChipSeconds = gr.onChipBytes / c.onBW;
    gr.offChipSeconds = gr.offChipBytes / c.offBW;
    gr.bound = boundOf(gr.computeSeconds, gr.onChipSeconds, gr.offChipSeconds);
  }
  return [...groups.values()].sort((a, b) => b.seconds - a.seconds);
}

/** Step time of a graph on a chip, kernel by kernel or as pipelined dataflow sections (see the file comment). */
export function simulate(g: StepGraph, hw: HardwareSpec, opts: SimulateOptions, p: Plan = plan(g, hw, opts)): SimulationResult {
  const prec = g.meta.precision;
  const c: SimContext = {
    g, hw, p,
    T: tensorMap(g),
    cost: g.ops.map((o) => opCost(o, hw, prec)),
    onBW: hw.onChip.bandwidthBytesPerSecond,
    offBW: hw.offChip.bandwidthBytesPerSecond * hw.offChip.efficiency,
    kbk: opts.mode === 'kbk',
  };
  const { units, opOff, opShare, byRole, phases, onChipPeak, total, totalOff } = runSections(c);
  const mem = memoryProfile(g);
  const peak = hw.compute.matmulTflops[prec]! * 1e12;
  const warnings: string[] = [];
  if (mem.peakBytes > hw.offChip.capacityBytes) {
    warnings.push(`needs ${(mem.peakBytes / 2 ** 30).toFixed(1)} GiB of off-chip memory at its peak, more than the ${(hw.offChip.capacityBytes / 2 ** 30).toFixed(0)} GiB of one ${hw.name}: a real run would shard it over chips or recompute activations (not modelled)`);
  }
  const streaming = units.filter((u) => u.streaming).length;
  if (streaming) warnings.push(`${streaming} section(s) exceed on-chip memory alone and re-read their weights for every micro-batch`);
  const boundTotals: Record<Bound, number> = { compute: 0, 'on-chip bandwidth': 0, 'off-chip bandwidth': 0, overhead: 0 };
  for (const u of units) boundTotals[u.bound] += u.seconds;
  const bound = (Object.entries(boundTotals).sort((a, b) => b[1] - a[1])[0]![0]) as Bound;
  return {
    schema: 'patchflow.simulation/1',
    mode: opts.mode,
    hardware: hw.name,
    model: g.meta,
    stepSeconds: total,
    tokensPerSecond: (g.meta.gradAccum * g.meta.batch * g.meta.tokensPerRow) / total,
    utilization: g.meta.executedFlops / (total * peak),
    modelFlopsUtilization: g.meta.modelFlops / (total * peak),
    executedFlops: g.meta.executedFlops,
    offChipBytes: totalOff,
    offChipBytesByRole: byRole,
    onChipPeakBytes: onChipPeak,
    memory: { persistentBytes: mem.persistentBytes, peakBytes: mem.peakBytes, savedActivationBytes: mem.savedActivationBytes, capacityBytes: hw.offChip.capacityBytes, fits: mem.peakBytes <= hw.offChip.capacityBytes },
    phases,
    bound,
    groups: groupBreakdown(c, opShare, opOff),
    units,
    kernels: p.kernels.length,
    ...(c.kbk ? {} : { sections: p.sections.length }),
    warnings,
  };
}
