/**
 * bench kernels: matmul GFLOP/s in every transpose layout on our `cpu` vs stock `tfjs-cpu`, for the
 * default model's matrix shapes. bench profile: where the time of one training step goes, per
 * tfjs kernel (tf.profile), on a chosen backend.
 */
import { tf, useBackend, crossEntropy } from '@patchflow/tensor';
import { GPT, resolveConfig, finalizeModelConfig } from '@patchflow/trainer';
import { formatTable, formatNumber } from '../table.js';

const LAYOUTS: [boolean, boolean, string][] = [
  [false, false, 'A·B'],
  [false, true, 'A·Bᵀ'],
  [true, false, 'Aᵀ·B'],
  [true, true, 'Aᵀ·Bᵀ'],
];

async function timeMatmul(m: number, n: number, k: number, ta: boolean, tb: boolean, reps: number): Promise<number> {
  const a = tf.randomNormal(ta ? [k, m] : [m, k]);
  const b = tf.randomNormal(tb ? [n, k] : [k, n]);
  let best = Infinity;
  for (let i = 0; i < reps + 1; i++) {
    const t0 = performance.now();
    const c = tf.matMul(a, b, ta, tb);
    await c.data();
    const dt = performance.now() - t0;
    c.dispose();
    if (i > 0 || reps === 0) best = Math.min(best, dt);
  }
  a.dispose();
  b.dispose();
  return (2 * m * n * k) / (best / 1000) / 1e9;
}

export async function kernelsBench(values: Record<string, unknown>): Promise<{ json: unknown; table: string }> {
  const c = finalizeModelConfig(resolveConfig({}).model, 256);
  const rows = resolveConfig({}).batchSize * c.seqLen;
  const shapes: [string, number, number, number][] = [
    ['qkv (tokens × d → 3d)', rows, 3 * c.dModel, c.dModel],
    ['mlp.fc (tokens × d → 4d)', rows, c.dFF, c.dModel],
    ['mlp.proj (tokens × 4d → d)', rows, c.dModel, c.dFF],
    ['lm head (tokens × d → V)', rows, c.vocabSize, c.dModel],
  ];
  const quick = values.quick === true;
  const out: { shape: string; m: number; n: number; k: number; layout: string; ours: number; stock: number; ratio: number }[] = [];
  for (const [name, m, n, k] of quick ? shapes.slice(0, 1) : shapes) {
    for (const [ta, tb, layout] of LAYOUTS) {
      await useBackend('cpu');
      const ours = await timeMatmul(m, n, k, ta, tb, 5);
      await useBackend('tfjs-cpu');
      const stock = await timeMatmul(m, n, k, ta, tb, 0);
      out.push({ shape: name, m, n, k, layout, ours, stock, ratio: ours / stock });
    }
  }
  await useBackend('cpu');
  const table = formatTable(
    out.map((r) => ({ shape: `${r.shape} ${r.m}×${r.n}×${r.k}`, layout: r.layout, 'ours GFLOP/s': formatNumber(r.ours, 1), 'stock GFLOP/s': formatNumber(r.stock, 2), ratio: `${formatNumber(r.ratio, 0)}x` })),
  );
  return { json: { matmul: out, date: new Date().toISOString() }, table };
}

export async function profileBench(values: Record<string, unknown>): Promise<{ json: unknown; table: string }> {
  const backend = typeof values.backend === 'string' ? values.backend : 'cpu';
  await useBackend(backend);
  const cfg = resolveConfig({});
  const m = finalizeModelConfig(cfg.model, 256);
  const model = new GPT(m, 1);
  const b = values.quick ? 4 : cfg.batchSize;
  const ids = tf.tensor2d(Int32Array.from({ length: b * m.seqLen }, (_, i) => (i * 7919) % 256), [b, m.seqLen], 'int32');
  const labels = tf.tensor2d(Int32Array.from({ length: b * m.seqLen }, (_, i) => (i * 104729) % 256), [b * m.seqLen, 1], 'int32');
  const vars = model.specs.map((s) => model.p(s.name));
  const step = () => {
    const { value, grads } = tf.variableGrads(() => tf.mean(crossEntropy(model.forward(ids), labels)) as tf.Scalar, vars);
    value.dispose();
    for (const g of Object.values(grads)) g.dispose();
  };
  step(); // warm-up
  const t0 = performance.now();
  const info = await tf.profile(step);
  const wall = performance.now() - t0;
  const byKernel = new Map<string, { ms: number; calls: number }>();
  for (const k of info.kernels) {
    // tf.profile also lists op scopes (`fusedMatMul__op`, `unnamed scope`) that enclose kernels
    if (k.name.endsWith('__op') || k.name === 'unnamed scope') continue;
    const e = byKernel.get(k.name) ?? { ms: 0, calls: 0 };
    e.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    e.calls += 1;
    byKernel.set(k.name, e);
  }
  const total = [...byKernel.values()].reduce((a, e) => a + e.ms, 0);
  const rows = [...byKernel.entries()].map(([name, e]) => ({ kernel: name, ms: e.ms, share: e.ms / total, calls: e.calls })).sort((x, y) => y.ms - x.ms);
  model.dispose();
  const table =
    formatTable(rows.slice(0, 15).map((r) => ({ kernel: r.kernel, ms: formatNumber(r.ms, 1), share: `${formatNumber(100 * r.share, 1)}%`, calls: r.calls }))) +
    `\nforward + backward of one step of the default model (batch ${b}) on ${backend}: ${formatNumber(total, 0)} ms in kernels, ${formatNumber(wall, 0)} ms wall (profiling adds overhead)`;
  return { json: { backend, batch: b, kernelMs: total, wallMs: wall, kernels: rows, date: new Date().toISOString() }, table };
}
