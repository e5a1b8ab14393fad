/// <reference types="@webgpu/types" />
/**
 * `patchflow bench gpu`: training tokens/s of the compiled step vs the eager tfjs-webgpu step, side by
 * side in one process, for three GPT shapes (byte vocabulary, fp32); and the compiled matmul's
 * TFLOP/s at 4096³ and at the shapes of the largest model's step, against the GPU's fp32 peak.
 *
 * A step is timed from submit to the GPU finishing it, over `steps` steps after warm-up steps: the
 * compiled step keeps one step in flight while it prepares the next (as training does); the eager
 * step reads its loss every step (as training does). GPU time per kernel kind comes from one profiled
 * step (timestamp queries around each dispatch).
 *
 * f16 (where the adapter has shader-f16 under the f16 toggles): each shape's compiled step is also
 * timed with `precision: 'f16'` (subgroup-matrix matmuls where available, else the shader-f16
 * fallback), and f16 × f16 → f32 matmuls are timed at 4096³ and the model's shapes.
 */
import { useBackend } from '@patchflow/tensor';
import {
  AdamW,
  BatchSampler,
  GPT,
  Rng,
  buildPlan,
  eagerStep,
  finalizeModelConfig,
  resolveConfig,
  resolvePhases,
  tokenBatch,
  type TrainConfig,
} from '@patchflow/trainer';
import { autotune, autotuneF16, TILE_CANDIDATES, type F16BenchOptions, type SgTile, type TileConfig } from '../compiled/index.js';
import { compileWebGpuStep, getComputeDevice, sgTileOverride } from './compiler.js';
import { STEPS_IN_FLIGHT, type StepPrecision } from './program.js';

export interface GpuBenchShape {
  label: string;
  nLayer: number;
  dModel: number;
  nHead: number;
  seqLen: number;
  batch: number;
}

export const GPU_BENCH_SHAPES: GpuBenchShape[] = [
  { label: '4L d256 T128 B16', nLayer: 4, dModel: 256, nHead: 4, seqLen: 128, batch: 16 },
  { label: '6L d512 T256 B16', nLayer: 6, dModel: 512, nHead: 8, seqLen: 256, batch: 16 },
  { label: '12L d768 T512 B8', nLayer: 12, dModel: 768, nHead: 12, seqLen: 512, batch: 8 },
];

/** Dense fp32 (non-tensor-core) peaks, TFLOP/s, by a name in the adapter's description. */
const FP32_PEAK: [RegExp, number][] = [
  [/H200/i, 66.9],
  [/H100/i, 66.9],
  [/A100/i, 19.5],
  [/L40S/i, 91.6],
  [/4090/i, 82.6],
];

export interface GpuBenchRow {
  shape: string;
  compiledTokensPerSecond: number;
  compiledMsPerStep: number;
  eagerTokensPerSecond?: number;
  eagerMsPerStep?: number;
  /** The compiled step with precision 'f16' (absent without shader-f16). */
  compiledF16TokensPerSecond?: number;
  compiledF16MsPerStep?: number;
  /** Loss scale after the timed f16 steps and steps skipped on overflow (random tokens, lr 1e-4). */
  f16LossScale?: number;
  f16SkippedSteps?: number;
  f16Profile?: { kernel: string; ms: number; dispatches: number }[];
  dispatchesPerStep: number;
  /** GPU time of one step by kernel kind (timestamp queries, each dispatch in its own pass), ms; largest first. */
  profile?: { kernel: string; ms: number; dispatches: number }[];
}

export interface GpuBenchResult {
  gpu: string;
  driver: string;
  date: string;
  rows: GpuBenchRow[];
  matmul: {
    /** Edge of the square product timed (4096 unless asked otherwise); fp32Tflops4096 is at this size. */
    size: number;
    fp32Tflops4096: number;
    fp32PeakTflops?: number;
    tile4096?: TileConfig;
    /** The step's distinct dense products at the largest shape, with their tuned TFLOP/s. */
    shapes: { m: number; n: number; k: number; transA: boolean; transB: boolean; tflops: number; tile?: TileConfig }[];
    /** f16 × f16 → f32 at size³ (absent without shader-f16). */
    f16Tflops4096?: number;
    /** 'subgroup-matrix' (tensor cores) or 'shader-f16' (fallback, f32 math). */
    f16Kernel?: string;
    f16Tile4096?: SgTile | TileConfig;
    f16Shapes?: { m: number; n: number; k: number; transA: boolean; transB: boolean; tflops: number; tile?: SgTile | TileConfig }[];
    /** Why there are no f16 figures, or why they are not on tensor cores. */
    f16Note?: string;
  };
}

function shapeConfig(s: GpuBenchShape, precision: StepPrecision = 'fp32'): TrainConfig {
  const c = resolveConfig({ model: { nLayer: s.nLayer, dModel: s.dModel, nHead: s.nHead, seqLen: s.seqLen }, batchSize: s.batch, optim: { warmupSteps: 0 }, precision });
  return { ...c, model: finalizeModelConfig(c.model, 256) };
}

function tokenStream(n: number): Int32Array {
  const r = new Rng(5);
  return Int32Array.from({ length: n }, () => Math.floor(r.next() * 256));
}

/** ms per step of the compiled step for one shape (steps in flight as in training). */
/** Kernel kind of a label: its words before the first dimension or count ('matmul NT', 'layerNorm backward dx', ...). */
function kind(label: string): string {
  return label.replace(/\s*\(writable inputs\)/, '').split(/ (?=[\dB]\S*[=x\d])/)[0]!.replace(/ \d.*$/, '');
}

async function timeCompiled(
  s: GpuBenchShape,
  steps: number,
  warmup: number,
  log: (l: string) => void,
  precision: StepPrecision = 'fp32',
): Promise<{ ms: number; dispatches: number; profile?: GpuBenchRow['profile']; lossScale?: number; skippedSteps?: number }> {
  const config = shapeConfig(s, precision);
  const model = new GPT(config.model, 1);
  const optimizer = new AdamW(config.optim, model.specs.map((x) => ({ name: x.name, variable: model.p(x.name), decay: x.decay })));
  const phase = resolvePhases(buildPlan([], config), config, [], model, optimizer)[0]!;
  const step = await compileWebGpuStep({ config, model, optimizer, phase, contribution: {} });
  if ('reason' in step) throw new Error(step.reason);
  log(`${s.label} ${precision}: ${step.description}`);
  await step.load();
  let last: { lossScale?: number; skippedSteps?: number } = {};
  const sampler = new BatchSampler(tokenStream(1 << 20), new Rng(2));
  const batch = () => tokenBatch(sampler.windows(s.batch, s.seqLen + 1), s.batch, phase.layout);
  const run = async (n: number) => {
    const inFlight: Promise<unknown>[] = [];
    for (let i = 0; i < n; i++) {
      inFlight.push((await step.submit([batch()], 1e-4, i + 1)).done.then((r) => (last = r)));
      if (inFlight.length > STEPS_IN_FLIGHT) await inFlight.shift();
    }
    await Promise.all(inFlight);
  };
  // warm up for a second at least (pipelines, caches, GPU clocks), then time at least `steps` steps
  // and two seconds, as a long training run sees them
  const w0 = performance.now();
  while (performance.now() - w0 < 1000) await run(warmup);
  let done = 0;
  const t0 = performance.now();
  while (done < steps || performance.now() - t0 < 2000) {
    await run(steps);
    done += steps;
  }
  const ms = (performance.now() - t0) / done;
  const dispatches = Number(/(\d+) dispatches/.exec(step.description)?.[1] ?? NaN);
  let profile: GpuBenchRow['profile'];
  const cd = await getComputeDevice(precision);
  if (cd.device.features.has('timestamp-query')) {
    const byKind = new Map<string, { ms: number; dispatches: number }>();
    for (const p of await step.profile([batch()], 1e-4, steps + warmup + 1)) {
      const e = byKind.get(kind(p.label)) ?? { ms: 0, dispatches: 0 };
      e.ms += p.ms;
      e.dispatches++;
      byKind.set(kind(p.label), e);
    }
    profile = [...byKind].map(([kernel, e]) => ({ kernel, ...e })).sort((a, b) => b.ms - a.ms);
  }
  step.dispose();
  model.dispose();
  optimizer.dispose();
  return { ms, dispatches, ...(profile ? { profile } : {}), ...(last.lossScale !== undefined ? { lossScale: last.lossScale, skippedSteps: last.skippedSteps ?? 0 } : {}) };
}

/** ms per step of the eager tfjs step on the webgpu backend. */
async function timeEager(s: GpuBenchShape, steps: number, warmup: number): Promise<number> {
  await useBackend('webgpu');
  const config = shapeConfig(s);
  const model = new GPT(config.model, 1);
  const optimizer = new AdamW(config.optim, model.specs.map((x) => ({ name: x.name, variable: model.p(x.name), decay: x.decay })));
  const phase = resolvePhases(buildPlan([], config), config, [], model, optimizer)[0]!;
  const sampler = new BatchSampler(tokenStream(1 << 20), new Rng(2));
  const one = () => eagerStep({ config, model, optimizer, sampler, phase, active: [], phaseCtx: () => ({}) as never, stepCtx: () => ({}) as never, lr: 1e-4 });
  for (let i = 0; i < warmup; i++) await one();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) await one();
  const ms = (performance.now() - t0) / steps;
  model.dispose();
  optimizer.dispose();
  return ms;
}

export interface GpuBenchOptions {
  /** Measured steps per shape (default 30 compiled; eager takes a third, at least 3). */
  steps?: number;
  /** Shapes (default GPU_BENCH_SHAPES; --quick: the first one). */
  shapes?: GpuBenchShape[];
  /** Skip the eager tfjs-webgpu step (slow: seconds per step at the largest shape). */
  skipEager?: boolean;
  /** Edge of the square matmul timed against the fp32 peak (default 4096). */
  matmulSize?: number;
  /** Also time the largest shape's products (default true). */
  modelShapes?: boolean;
  /** Time the f16 step and f16 matmuls where the adapter has shader-f16 (default true). */
  f16?: boolean;
  /** Time the fp32 step and fp32 matmuls (default true). */
  fp32?: boolean;
  log?: (line: string) => void;
}

export async function gpuBench(opts: GpuBenchOptions = {}): Promise<GpuBenchResult> {
  const log = opts.log ?? (() => {});
  const steps = opts.steps ?? 30;
  const shapes = opts.shapes ?? GPU_BENCH_SHAPES;
  const cd = await getComputeDevice();
  let f16Note: string | undefined;
  let f16cd: Awaited<ReturnType<typeof getComputeDevice>> | undefined;
  if (opts.f16 !== false) {
    f16cd = await getComputeDevice('f16');
    if (!f16cd.f16?.shaderF16) {
      f16Note = `no f16 figures: ${f16cd.f16?.reason ?? 'no shader-f16'}`;
      f16cd = undefined;
    } else if (!f16cd.f16.subgroupMatrix) f16Note = `f16 on the shader-f16 fallback kernels (f32 math): ${f16cd.f16.reason}`;
  }
  const rows: GpuBenchRow[] = [];
  for (const s of shapes) {
    const tokens = s.batch * s.seqLen;
    const c = opts.fp32 === false ? undefined : await timeCompiled(s, steps, 5, log);
    const row: GpuBenchRow = { shape: s.label, compiledTokensPerSecond: c ? (tokens / c.ms) * 1000 : NaN, compiledMsPerStep: c?.ms ?? NaN, dispatchesPerStep: c?.dispatches ?? NaN, ...(c?.profile ? { profile: c.profile } : {}) };
    if (c?.profile) log(`${s.label}: GPU time by kernel: ${c.profile.slice(0, 8).map((p) => `${p.kernel} ${p.ms.toFixed(2)} ms (${p.dispatches})`).join(', ')}`);
    if (c) log(`${s.label}: compiled ${c.ms.toFixed(2)} ms/step, ${Math.round(row.compiledTokensPerSecond).toLocaleString('en-US')} tokens/s`);
    if (f16cd) {
      try {
        const h = await timeCompiled(s, steps, 5, log, 'f16');
        Object.assign(row, {
          compiledF16TokensPerSecond: (tokens / h.ms) * 1000,
          compiledF16MsPerStep: h.ms,
          ...(h.lossScale !== undefined ? { f16LossScale: h.lossScale, f16SkippedSteps: h.skippedSteps } : {}),
          ...(h.profile ? { f16Profile: h.profile } : {}),
        });
        if (h.profile) log(`${s.label} f16: GPU time by kernel: ${h.profile.slice(0, 8).map((p) => `${p.kernel} ${p.ms.toFixed(2)} ms (${p.dispatches})`).join(', ')}`);
        log(`${s.label}: compiled f16 ${h.ms.toFixed(2)} ms/step, ${Math.round(row.compiledF16TokensPerSecond!).toLocaleString('en-US')} tokens/s`);
      } catch (e) {
        f16Note = `${f16Note ? `${f16Note}; ` : ''}the f16 step failed at ${s.label}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`;
        log(f16Note);
      }
    }
    if (!opts.skipEager) {
      const e = await timeEager(s, Math.max(3, Math.round(steps / 3)), 2);
      row.eagerMsPerStep = e;
      row.eagerTokensPerSecond = (tokens / e) * 1000;
      log(`${s.label}: eager ${e.toFixed(1)} ms/step, ${Math.round(row.eagerTokensPerSecond).toLocaleString('en-US')} tokens/s`);
    }
    rows.push(row);
  }
  const edge = opts.matmulSize ?? 4096;
  const fp32 = opts.fp32 !== false;
  const big = fp32 ? await autotune(cd.device, { shapes: [{ m: edge, n: edge, k: edge }], configs: TILE_CANDIDATES, reps: 10, warmup: 2 }) : [{ tflops: NaN, tile: undefined }];
  const last = shapes.at(-1)!;
  const R = last.batch * last.seqLen;
  const d = last.dModel;
  const modelShapes = [
    { m: R, n: 3 * d, k: d, transA: false, transB: false },
    { m: R, n: 4 * d, k: d, transA: false, transB: false },
    { m: R, n: d, k: 4 * d, transA: false, transB: false },
    { m: R, n: d, k: 4 * d, transA: false, transB: true },
    { m: d, n: 4 * d, k: R, transA: true, transB: false },
  ];
  const tunedShapes = opts.modelShapes === false || !fp32 ? [] : await autotune(cd.device, { shapes: modelShapes, reps: 10, warmup: 2 });
  let f16: Partial<GpuBenchResult['matmul']> = {};
  if (f16cd) {
    const only = sgTileOverride();
    const sub: Partial<F16BenchOptions> = f16cd.f16!.subgroupMatrix ? { subgroupSize: f16cd.f16!.subgroupSize!, compileTimeoutMs: 30_000, ...(only ? { sgTiles: [only] } : {}) } : {};
    const [sq] = await autotuneF16(f16cd.device, { shapes: [{ m: edge, n: edge, k: edge }], reps: 10, warmup: 2, log, ...sub });
    const per = opts.modelShapes === false ? [] : await autotuneF16(f16cd.device, { shapes: modelShapes, reps: 10, warmup: 2, log, ...sub });
    f16 = {
      f16Tflops4096: sq!.tflops,
      f16Kernel: sub.subgroupSize ? 'subgroup-matrix' : 'shader-f16',
      ...(sq!.best ? { f16Tile4096: sq!.best.tile } : {}),
      f16Shapes: per.map((t) => ({ ...(t.shape as { m: number; n: number; k: number; transA: boolean; transB: boolean }), tflops: t.tflops, ...(t.best ? { tile: t.best.tile } : {}) })),
    };
  }
  if (f16Note) f16.f16Note = f16Note;
  const peak = FP32_PEAK.find(([re]) => re.test(`${cd.info.description} ${cd.info.device}`))?.[1];
  return {
    gpu: cd.info.description || cd.info.device || cd.info.vendor,
    driver: `${cd.info.vendor} ${cd.info.architecture}`.trim(),
    date: new Date().toISOString(),
    rows,
    matmul: {
      size: edge,
      fp32Tflops4096: big[0]!.tflops,
      ...(peak ? { fp32PeakTflops: peak } : {}),
      ...(big[0]!.tile ? { tile4096: big[0]!.tile } : {}),
      shapes: tunedShapes.map((t) => ({ ...(t.shape as { m: number; n: number; k: number; transA: boolean; transB: boolean }), tflops: t.tflops, ...(t.tile ? { tile: t.tile } : {}) })),
      ...f16,
    },
  };
}
