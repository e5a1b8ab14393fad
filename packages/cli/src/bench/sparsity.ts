/**
 * bench sparsity: sparse training from scratch against dense training, same model, same token
 * budget, same held-out set, on the bundled corpus, in one process (ratios side by side):
 * dense; static unstructured 75% (masks on dense products); block 75% and 87.5% (block-sparse
 * kernels); block 75% with a final 10% dense phase; block 75% + patch-level training (K=4, λ=2/3).
 * Plus a kernel table: dense vs block-sparse products (forward, dx, dw) at 0–93.75% sparsity for the
 * model's matrix shapes on the current cpu backend.
 */
import * as os from 'node:os';
import { tf, useBackend, nativeInfo, hasFusedKernel, KERNELS } from '@patchflow/tensor';
import { resolveConfig, loadCorpus, finalizeModelConfig, type TrainConfig, type TrainerPlugin } from '@patchflow/trainer';
import { patchTraining } from '@patchflow/patch-training';
import { sparseTraining, maskFromScores, parsePattern, blockMaskOf, KERNEL_MAX_DENSITY } from '@patchflow/sparsity';
import { formatTable, formatNumber } from '../table.js';
import { measureRun, type RunMeasure } from './patch.js';

interface KernelRow {
  shape: string;
  m: number;
  k: number;
  n: number;
  blockSize: number;
  sparsity: number;
  /** Milliseconds: the three dense products (x·W, dy·Wᵀ, xᵀ·dy) and the block-sparse kernels. */
  dense: { fwd: number; dx: number; dw: number; total: number };
  sparse: { fwd: number; grad: number; total: number };
  ratio: number;
}

async function timeIt(f: () => tf.Tensor | tf.Tensor[], reps: number): Promise<number> {
  let best = Infinity;
  for (let i = 0; i <= reps; i++) {
    const t0 = performance.now();
    const r = f();
    const list = Array.isArray(r) ? r : [r];
    for (const t of list) await t.data();
    const dt = performance.now() - t0;
    for (const t of list) t.dispose();
    if (i > 0) best = Math.min(best, dt);
  }
  return best;
}

function run(name: string, inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap): tf.Tensor[] {
  const r = tf.engine().runKernel(name, inputs, attrs);
  return Array.isArray(r) ? (r as tf.Tensor[]) : [r as tf.Tensor];
}

/** Dense vs block-sparse products for each shape and sparsity (block masks chosen at random). */
export async function kernelTable(shapes: [string, number, number, number][], sparsities: number[], blockSize: number, reps: number): Promise<KernelRow[]> {
  const out: KernelRow[] = [];
  for (const [shape, m, k, n] of shapes) {
    const x = tf.randomNormal([m, k], 0, 1, 'float32', 1);
    const w = tf.randomNormal([k, n], 0, 1, 'float32', 2);
    const dy = tf.randomNormal([m, n], 0, 1, 'float32', 3);
    const dense = {
      fwd: await timeIt(() => tf.matMul(x, w), reps),
      dx: await timeIt(() => tf.matMul(dy, w, false, true), reps),
      dw: await timeIt(() => tf.matMul(x, dy, true, false), reps),
      total: 0,
    };
    dense.total = dense.fwd + dense.dx + dense.dw;
    for (const s of sparsities) {
      const scores = Float32Array.from({ length: k * n }, (_, i) => ((i * 2654435761) >>> 0) / 4294967296);
      const mask = maskFromScores(scores, [k, n], parsePattern(`block:${blockSize}`), 1 - s);
      const bm = tf.tensor2d(blockMaskOf(mask, [k, n], blockSize), [k / blockSize, n / blockSize], 'int32');
      const attrs = { blockSize };
      const fwd = await timeIt(() => run(KERNELS.blockSparseMatMul, { x, w, blockMask: bm }, attrs), reps);
      const grad = await timeIt(() => run(KERNELS.blockSparseMatMulGrad, { x, w, blockMask: bm, dy }, attrs), reps);
      bm.dispose();
      out.push({ shape, m, k, n, blockSize, sparsity: s, dense, sparse: { fwd, grad, total: fwd + grad }, ratio: (fwd + grad) / dense.total });
    }
    x.dispose();
    w.dispose();
    dy.dispose();
  }
  return out;
}

interface Variant {
  key: string;
  label: string;
  plugins: () => TrainerPlugin[];
}

export async function sparsityBench(values: Record<string, unknown>): Promise<{ json: unknown; table: string }> {
  const quick = values.quick === true;
  const loadStart = os.loadavg();
  await useBackend('cpu');
  const say = (s: string) => process.stderr.write(`bench sparsity: ${s}\n`);
  if (!hasFusedKernel(KERNELS.blockSparseMatMul)) say('warning: the cpu backend has no block-sparse kernel (native kernels not loaded?): block runs use dense products');

  // kernel table first (a few seconds)
  const base = quick
    ? resolveConfig({ model: { nLayer: 2, nHead: 4, dModel: 128, seqLen: 64 }, batchSize: 16, evalBatches: 8, checkpointEvery: 0, optim: { warmupSteps: 20 } })
    : resolveConfig({ checkpointEvery: 0 });
  const mc = finalizeModelConfig(base.model, 256);
  const rows = base.batchSize * mc.seqLen;
  const d = mc.dModel;
  const shapes: [string, number, number, number][] = [
    ['attn.qkv', rows, d, 3 * d],
    ['attn.proj', rows, d, d],
    ['mlp.fc', rows, d, mc.dFF],
    ['mlp.proj', rows, mc.dFF, d],
  ];
  const blockSize = 32;
  const sparsities = [0, 0.5, 0.75, 0.875, 0.9375];
  say(`kernel table: ${shapes.length} shapes × ${sparsities.length} sparsities, block ${blockSize}`);
  const kernels = hasFusedKernel(KERNELS.blockSparseMatMul) ? await kernelTable(shapes, sparsities, blockSize, quick ? 2 : 7) : [];

  const steps = typeof values.steps === 'number' ? values.steps : quick ? 120 : 600;
  const evalEvery = quick ? 40 : 100;
  const cfg = (): TrainConfig => resolveConfig(base, { steps, evalEvery, checkpointEvery: 0 });
  const corpus = loadCorpus();
  const block = `block:${blockSize}`;
  const variants: Variant[] = [
    { key: 'dense', label: 'dense', plugins: () => [] },
    { key: 'unstructured75', label: 'static unstructured 75%', plugins: () => [sparseTraining({ sparsity: 0.75, pattern: 'unstructured' })] },
    { key: 'block75', label: `static ${block} 75%`, plugins: () => [sparseTraining({ sparsity: 0.75, pattern: block })] },
    { key: 'block875', label: `static ${block} 87.5%`, plugins: () => [sparseTraining({ sparsity: 0.875, pattern: block })] },
    { key: 'block75dense10', label: `${block} 75% + 10% dense`, plugins: () => [sparseTraining({ sparsity: 0.75, pattern: block, denseFraction: 0.1 })] },
    { key: 'block75patch', label: `${block} 75% + patch K=4 λ=2/3`, plugins: () => [patchTraining({ patchSize: 4, fraction: 2 / 3 }), sparseTraining({ sparsity: 0.75, pattern: block })] },
    // the machine drifts: dense again at the end; time ratios use the mean of both dense runs
    { key: 'denseAgain', label: 'dense (again, at the end)', plugins: () => [] },
  ];
  const results: Record<string, RunMeasure & { label: string }> = {};
  for (const v of variants) {
    say(`${v.label}: ${steps} steps of token budget`);
    const m = await measureRun(cfg(), v.plugins(), corpus);
    results[v.key] = { ...m, label: v.label };
    say(`${v.label}: val ${m.valLoss.toFixed(4)}, ${(m.flops / 1e12).toFixed(2)} TFLOP, ${m.seconds.toFixed(0)} s`);
  }
  const dense = results.dense!;
  const denseSeconds = (dense.seconds + results.denseAgain!.seconds) / 2;
  const ratios = Object.fromEntries(
    Object.entries(results).map(([k, r]) => [k, { valLoss: r.valLoss / dense.valLoss, flops: r.flops / dense.flops, seconds: r.seconds / denseSeconds }]),
  );
  const goal = {
    sparseToDenseLossWithin1pct: ratios.block75dense10!.valLoss <= 1.01,
    blockSecondsAtMost06: ratios.block75!.seconds <= 0.6 && ratios.block875!.seconds <= 0.6,
    sparsePatchSecondsUnder035: ratios.block75patch!.seconds < 0.35,
    sparsePatchLossWithin2pct: ratios.block75patch!.valLoss <= 1.02,
  };
  const json = {
    runs: Object.fromEntries(
      Object.entries(results).map(([k, r]) => [
        k,
        { label: r.label, valLoss: r.valLoss, flops: r.flops, seconds: r.seconds, tokens: r.tokens, steps: r.steps, phases: r.cost.phases.map((p) => ({ name: p.name, steps: p.steps, tokens: p.tokens, flops: p.flops })), curve: r.curve },
      ]),
    ),
    ratios,
    goal,
    kernels,
    settings: {
      quick,
      steps,
      tokenBudget: steps * base.batchSize * base.gradAccum * base.model.seqLen,
      evalEvery,
      evalWindows: base.evalBatches * base.batchSize,
      model: mc,
      batchSize: base.batchSize,
      optim: base.optim,
      corpus: corpus.name,
      blockSize,
      kernelMaxDensity: KERNEL_MAX_DENSITY,
      secondsNote: 'training wall-clock from the first to the last step, periodic evaluations excluded; time ratios against the mean of the two dense runs (first and last)',
    },
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version, native: nativeInfo(), loadAverage1mStart: loadStart[0], loadAverage1mEnd: os.loadavg()[0] },
    date: new Date().toISOString(),
  };

  const runTable = formatTable(
    variants.map((v) => {
      const r = results[v.key]!;
      const q = ratios[v.key]!;
      return {
        run: v.label,
        'val loss': r.valLoss.toFixed(4),
        TFLOP: (r.flops / 1e12).toFixed(2),
        seconds: r.seconds.toFixed(0),
        'loss ratio': q.valLoss.toFixed(3),
        'FLOP ratio': q.flops.toFixed(3),
        'time ratio': q.seconds.toFixed(3),
      };
    }),
  );
  const kTable = kernels.length
    ? formatTable(
        kernels.map((r) => ({
          shape: `${r.shape} ${r.m}×${r.k}·${r.k}×${r.n}`,
          sparsity: `${(100 * r.sparsity).toFixed(2)}%`,
          'dense ms (fwd+dx+dw)': formatNumber(r.dense.total, 2),
          'block-sparse ms (fwd+grad)': formatNumber(r.sparse.total, 2),
          ratio: r.ratio.toFixed(3),
          'ideal': (1 - r.sparsity).toFixed(3),
        })),
      )
    : '(no block-sparse kernel on this backend)';
  const table =
    `training: ${steps} steps × ${base.batchSize} × ${mc.seqLen} tokens, model ${mc.nLayer}×${mc.dModel}, bundled corpus; ratios against dense (time: mean of the first and last runs)\n${runTable}\n` +
    `goals: sparse-to-dense loss within 1% (${goal.sparseToDenseLossWithin1pct ? 'met' : 'not met'}), block runs time ratio <= 0.6 (${goal.blockSecondsAtMost06 ? 'met' : 'not met'}), ` +
    `sparse+patch time < 0.35 (${goal.sparsePatchSecondsUnder035 ? 'met' : 'not met'}) at loss within 2% (${goal.sparsePatchLossWithin2pct ? 'met' : 'not met'})\n\n` +
    `kernels: dense vs block-sparse (${block}) products on cpu, best of ${quick ? 2 : 7}\n${kTable}`;
  return { json, table };
}
