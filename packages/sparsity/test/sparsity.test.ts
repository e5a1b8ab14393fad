import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it, expect } from 'vitest';
import { hasFusedKernel, useBackend } from '@patchflow/tensor';
import { tempDir, tinyConfigWith, whaleCorpus } from '@patchflow/test-fixtures';
import { train, resolveConfig, PluginError, finalizeModelConfig, paramSpecs, type TrainEvent, type TrainResult, type TrainerPlugin } from '@patchflow/trainer';
import { patchTraining } from '@patchflow/patch-training';
import {
  sparseTraining,
  resolveSparsityOptions,
  layerDensities,
  maskFromScores,
  checkPattern,
  countKept,
  parsePattern,
  blockMaskOf,
  topUnits,
  gmpSparsity,
  riglFraction,
  maskedMatrices,
  KERNEL_MAX_DENSITY,
  type SparsityPlugin,
  type SparsityOptions,
} from '../src/index.js';

const text = whaleCorpus.text;
const corpus = whaleCorpus;
const tinyConfig = tinyConfigWith(resolveConfig, { model: { nLayer: 2, dModel: 32 } });
const tmp = () => tempDir('pf-sparsity-');
const stepEvents = (events: TrainEvent[]) => events.filter((e): e is Extract<TrainEvent, { type: 'step' }> => e.type === 'step');

/** Deterministic pseudo-random values in [-1, 1). */
function rand(n: number, seed: number): Float32Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return (s / 4294967296) * 2 - 1;
  });
}

async function weights(r: TrainResult, name: string): Promise<Float32Array> {
  return (await r.model.p(name).data()) as Float32Array;
}

describe('options and bad input', () => {
  it('has defaults: 75% unstructured static, uniform, attention + MLP', () => {
    expect(resolveSparsityOptions({})).toMatchObject({ sparsity: 0.75, pattern: 'unstructured', mode: 'static', denseFraction: 0, distribution: 'uniform', layers: ['attention', 'mlp'] });
  });
  it('N:M implies its sparsity', () => {
    expect(resolveSparsityOptions({ pattern: 'nm:2:4' }).sparsity).toBe(0.5);
    expect(resolveSparsityOptions({ pattern: 'nm:1:8', sparsity: 0.875 }).sparsity).toBe(0.875);
  });
  it.each([
    [{ sparsity: 1 }, /plugins\.sparsity\.sparsity must be a number in \[0, 1\), got 1/],
    [{ sparsity: -0.1 }, /sparsity.*\[0, 1\)/],
    [{ sparsity: '0.5' }, /sparsity.*got "0.5"/],
    [{ pattern: 'nm:4:2' }, /N \(4\) must not exceed M \(2\)/],
    [{ pattern: 'nm:0:4' }, /at least 1/],
    [{ pattern: 'diagonal' }, /unknown plugins.sparsity.pattern.*"diagonal"/],
    [{ pattern: 'block:0' }, /block size must be at least 1/],
    [{ mode: 'lottery' }, /plugins\.sparsity\.mode must be "static", "gmp" or "rigl"/],
    [{ pattern: 'nm:2:4', mode: 'rigl' }, /must be "static" with an N:M pattern/],
    [{ pattern: 'nm:2:4', sparsity: 0.75 }, /must be 0.5 \(1 − N\/M\)/],
    [{ denseFraction: 1 }, /plugins\.sparsity\.denseFraction must.*\[0, 1\)/],
    [{ distribution: 'normal' }, /distribution must be "uniform" or "erk"/],
    [{ layers: ['attention', 'norm'] }, /layers must be a non-empty list/],
    [{ interval: 0 }, /interval must be an integer >= 1/],
    [{ colour: 'red' }, /unknown key "plugins.sparsity.colour"/],
  ])('%j is rejected with a clear error', (opts, msg) => {
    expect(() => resolveSparsityOptions(opts as SparsityOptions)).toThrow(msg);
    expect(() => sparseTraining(opts as SparsityOptions)).toThrow(PluginError);
  });
  it('a block size that does not divide a matrix is rejected before training starts', async () => {
    const events: TrainEvent[] = [];
    await expect(train({ config: tinyConfig(), corpus, plugins: [sparseTraining({ pattern: 'block:24' })], onEvent: (e) => events.push(e) })).rejects.toThrow(
      /block size 24 does not divide blocks\.0\.attn\.qkv\.weight's shape \[32, 96\]/,
    );
    expect(stepEvents(events)).toHaveLength(0);
  });
  it('M must divide the inputs of every matrix', async () => {
    await expect(train({ config: tinyConfig(), corpus, plugins: [sparseTraining({ pattern: 'nm:2:3' })] })).rejects.toThrow(/M = 3 does not divide the 32 inputs/);
  });
});

describe('masks', () => {
  const shape = [64, 96] as const;
  const scores = rand(64 * 96, 3).map(Math.abs);

  it('unstructured keeps exactly the requested share, the largest scores', () => {
    const m = maskFromScores(scores, shape, parsePattern('unstructured'), 0.25);
    expect(countKept(m)).toBe(Math.round(0.25 * 64 * 96));
    let minKept = Infinity;
    let maxDropped = -Infinity;
    m.forEach((k, i) => (k ? (minKept = Math.min(minKept, scores[i]!)) : (maxDropped = Math.max(maxDropped, scores[i]!))));
    expect(minKept).toBeGreaterThanOrEqual(maxDropped);
  });

  it('N:M keeps exactly N of every M inputs of each output, the largest', () => {
    const p = parsePattern('nm:2:4');
    const m = maskFromScores(scores, shape, p, 0.5);
    expect(checkPattern(m, shape, p)).toBeUndefined();
    expect(countKept(m)).toBe(64 * 96 / 2);
    // column 5, rows 8..11: the two largest scores are kept
    const group = [8, 9, 10, 11].map((r) => ({ r, s: scores[r * 96 + 5]! })).sort((a, b) => b.s - a.s);
    expect(group.slice(0, 2).map((g) => m[g.r * 96 + 5])).toEqual([1, 1]);
    expect(group.slice(2).map((g) => m[g.r * 96 + 5])).toEqual([0, 0]);
  });

  it('block masks are whole b×b blocks, chosen by block score sum, at the requested density', () => {
    for (const b of [8, 16, 32]) {
      const p = parsePattern(`block:${b}`);
      const m = maskFromScores(scores, shape, p, 0.25);
      expect(checkPattern(m, shape, p)).toBeUndefined();
      const blocks = (64 / b) * (96 / b);
      expect(countKept(m)).toBe(Math.round(0.25 * blocks) * b * b);
      // the kept blocks have the largest sums (plain recomputation)
      const sums: { k: number; s: number }[] = [];
      for (let bi = 0; bi < 64 / b; bi++)
        for (let bj = 0; bj < 96 / b; bj++) {
          let s = 0;
          for (let i = 0; i < b; i++) for (let j = 0; j < b; j++) s += scores[(bi * b + i) * 96 + bj * b + j]!;
          sums.push({ k: m[bi * b * 96 + bj * b]!, s });
        }
      const minKept = Math.min(...sums.filter((x) => x.k).map((x) => x.s));
      const maxDropped = Math.max(...sums.filter((x) => !x.k).map((x) => x.s));
      expect(minKept).toBeGreaterThanOrEqual(maxDropped);
      const bm = blockMaskOf(m, shape, b);
      expect(bm.reduce((a, x) => a + x, 0)).toBe(Math.round(0.25 * blocks));
    }
  });

  it('topUnits breaks ties by index and respects eligibility', () => {
    const s = Float32Array.from([1, 3, 3, 3, 0, 5]);
    expect([...topUnits(s, 3)]).toEqual([0, 1, 1, 0, 0, 1]);
    expect([...topUnits(s, 2, Uint8Array.from([1, 0, 0, 1, 1, 0]))]).toEqual([1, 0, 0, 1, 0, 0]);
  });

  it('ERK densities average to the target, scale with (k+n)/(k·n), and cap at 1', () => {
    const shapes = { a: [32, 96], b: [32, 32], c: [32, 128], d: [128, 32], e: [4, 4] };
    const d = layerDensities(shapes, 0.25, 'erk');
    const size = (s: number[]) => s[0]! * s[1]!;
    const total = Object.values(shapes).reduce((a, s) => a + size(s), 0);
    const kept = Object.entries(shapes).reduce((a, [n, s]) => a + d[n]! * size(s), 0);
    expect(kept / total).toBeCloseTo(0.25, 10);
    expect(d.e).toBe(1); // tiny layer: capped dense
    // the others follow eps·(k+n)/(k·n)
    const eps = d.a! / ((32 + 96) / (32 * 96));
    for (const n of ['b', 'c', 'd']) expect(d[n]).toBeCloseTo((eps * (shapes[n as 'b']![0]! + shapes[n as 'b']![1]!)) / size(shapes[n as 'b']!), 10);
    expect(layerDensities(shapes, 0.25, 'uniform').c).toBe(0.25);
  });

  it('schedules: cubic GMP and RigL cosine, hand-computed', () => {
    expect(gmpSparsity(0.8, 10, 100, 0.1, 0.6)).toBe(0);
    expect(gmpSparsity(0.8, 35, 100, 0.1, 0.6)).toBeCloseTo(0.8 * (1 - 0.5 ** 3), 12); // halfway: 0.7
    expect(gmpSparsity(0.8, 60, 100, 0.1, 0.6)).toBe(0.8);
    expect(gmpSparsity(0.8, 90, 100, 0.1, 0.6)).toBe(0.8);
    expect(riglFraction(0.3, 0, 100, 0.75)).toBeCloseTo(0.3, 12);
    expect(riglFraction(0.3, 37.5, 100, 0.75)).toBeCloseTo(0.15, 12);
    expect(riglFraction(0.3, 75, 100, 0.75)).toBe(0);
  });

  it('masks the attention and MLP matrices by default, the embeddings only when asked', () => {
    const m = finalizeModelConfig(tinyConfig().model, 256);
    expect(Object.keys(maskedMatrices(m, ['attention', 'mlp']))).toEqual(paramSpecs(m).map((s) => s.name).filter((n) => /(qkv|proj|fc)\.weight$/.test(n)));
    expect(Object.keys(maskedMatrices(m, ['embeddings']))).toEqual(['tok_emb.weight']);
  });
});

/** Checks that every masked entry of every masked matrix is exactly zero, and its AdamW moments too. */
async function expectPrunedZero(r: TrainResult, plugin: SparsityPlugin, optimizerState?: Record<string, { data: Float32Array }>) {
  const masks = plugin.masks();
  expect(masks.size).toBeGreaterThan(0);
  for (const [name, { mask }] of masks) {
    const w = await weights(r, name);
    let nonzeroPruned = 0;
    let nonzeroKept = 0;
    mask.forEach((k, i) => (k ? (nonzeroKept += +(w[i] !== 0)) : (nonzeroPruned += +(w[i] !== 0))));
    expect(nonzeroPruned, `${name}: pruned entries that are not zero`).toBe(0);
    expect(nonzeroKept).toBeGreaterThan(0.9 * countKept(mask));
    if (optimizerState) {
      for (const mv of ['m', 'v']) {
        const st = optimizerState[`${mv}.${name}`]!.data;
        expect(st.some((x, i) => !mask[i] && x !== 0), `${mv} of pruned entries of ${name}`).toBe(false);
      }
    }
  }
}

function readOptimizer(dir: string): Record<string, { data: Float32Array }> {
  // safetensors: 8-byte header length, JSON header, raw data
  const buf = fs.readFileSync(path.join(dir, 'checkpoint', 'optimizer.safetensors'));
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
  const out: Record<string, { data: Float32Array }> = {};
  for (const [k, v] of Object.entries(header)) {
    if (k === '__metadata__') continue;
    const bytes = buf.subarray(8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]);
    out[k] = { data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) };
  }
  return out;
}

describe('training', () => {
  it('static masks: pruned weights and their AdamW moments stay exactly zero through training', async () => {
    for (const pattern of ['unstructured', 'nm:2:4', 'block:16']) {
      const plugin = sparseTraining({ sparsity: pattern === 'nm:2:4' ? undefined : 0.75, pattern });
      const dir = tmp();
      const r = await train({ config: tinyConfig({ steps: 20 }), corpus, outDir: dir, plugins: [plugin] });
      const p = parsePattern(pattern);
      for (const [, { mask, shape }] of plugin.masks()) {
        expect(checkPattern(mask, shape, p)).toBeUndefined();
        expect(countKept(mask) / mask.length).toBeCloseTo(pattern === 'nm:2:4' ? 0.5 : 0.25, 2);
      }
      await expectPrunedZero(r, plugin, readOptimizer(dir));
      expect(Number.isFinite(r.valLoss)).toBe(true);
      r.model.dispose();
    }
  });

  it('counts sparse FLOPs: dense count minus the pruned share of each masked product', async () => {
    const events: TrainEvent[] = [];
    const plugin = sparseTraining({ sparsity: 0.75, pattern: 'block:16' });
    const cfg = tinyConfig({ steps: 4 });
    const r = await train({ config: cfg, corpus, plugins: [plugin], onEvent: (e) => events.push(e) });
    const m = r.model.config;
    const d = m.dModel;
    const dense = 3 * (m.nLayer * (2 * (d * 3 * d + d * d + 2 * d * m.dFF) + 4 * m.seqLen * d) + 2 * d * m.vocabSize);
    const saved = 0.75 * 6 * m.nLayer * (d * 3 * d + d * d + 2 * d * m.dFF);
    const perStep = cfg.batchSize * m.seqLen * (dense - saved);
    expect(stepEvents(events).map((e) => e.flops)).toEqual([1, 2, 3, 4].map((i) => i * perStep));
    expect(stepEvents(events)[0]!.extra.density).toBeCloseTo(0.25, 12);
    const total = r.model.parameterCount();
    expect(stepEvents(events)[0]!.extra.nonzeroParams).toBe(total - 0.75 * m.nLayer * (d * 3 * d + d * d + 2 * d * m.dFF));
    r.model.dispose();
  });

  it('block masks use the block-sparse kernel, and train exactly like dense products of the masked weights', async () => {
    await useBackend('cpu');
    const run = async (kernel: 'auto' | 'dense') => {
      const plugin = sparseTraining({ sparsity: 0.75, pattern: 'block:16', kernel });
      const events: TrainEvent[] = [];
      let overrides: string[] = [];
      const r = await train({
        config: tinyConfig({ steps: 8 }),
        corpus,
        plugins: [plugin, { name: 'spy', plan: (p) => p.map((x) => ({ ...x, plugins: { ...x.plugins, spy: {} } })), afterStep: (ctx) => void (overrides = ctx.model.matMulOverrides()) }],
        onEvent: (e) => events.push(e),
      });
      r.model.dispose();
      return { losses: stepEvents(events).map((e) => e.loss), overrides, valLoss: r.valLoss };
    };
    const fast = await run('auto');
    const slow = await run('dense');
    expect(hasFusedKernel('PfBlockSparseMatMul'), 'the cpu backend has the native block-sparse kernels').toBe(true);
    expect(fast.overrides.length).toBe(8);
    expect(slow.overrides).toEqual([]);
    fast.losses.forEach((l, i) => expect(l).toBeCloseTo(slow.losses[i]!, 4));
    expect(fast.valLoss).toBeCloseTo(slow.valLoss, 4);
    expect(KERNEL_MAX_DENSITY).toBeGreaterThanOrEqual(0.25);
  });

  it('RigL keeps the density constant while it moves the mask, and regrown weights start at zero', async () => {
    const plugin = sparseTraining({ sparsity: 0.75, pattern: 'unstructured', mode: 'rigl', interval: 4, end: 1 });
    const snapshots: { step: number; masks: Map<string, Uint8Array>; w: Map<string, Float32Array> }[] = [];
    const dir = tmp();
    const r = await train({
      config: tinyConfig({ steps: 12 }),
      corpus,
      outDir: dir,
      plugins: [
        plugin,
        {
          name: 'snap',
          plan: (p) => p.map((x) => ({ ...x, plugins: { ...x.plugins, snap: {} } })),
          async afterStep(ctx) {
            const w = new Map<string, Float32Array>();
            for (const n of plugin.masks().keys()) w.set(n, (await ctx.model.p(n).data()) as Float32Array);
            snapshots.push({ step: ctx.step, masks: new Map([...plugin.masks()].map(([k, v]) => [k, v.mask])), w });
          },
        },
      ],
    });
    expect(plugin.updates).toBe(2); // steps 4 and 8 (at 12 = end the update share is 0)
    const name = 'blocks.0.mlp.fc.weight';
    const at = (s: number) => snapshots.find((x) => x.step === s)!;
    for (const s of snapshots) for (const [, m] of s.masks) expect(countKept(m) / m.length).toBeCloseTo(0.25, 3);
    const before = at(3).masks.get(name)!;
    const after = at(4).masks.get(name)!;
    let grown = 0;
    let dropped = 0;
    after.forEach((k, i) => {
      if (k && !before[i]) {
        grown++;
        expect(at(4).w.get(name)![i] === 0).toBe(true);
      }
      if (!k && before[i]) dropped++;
    });
    expect(grown).toBeGreaterThan(0);
    expect(grown).toBe(dropped);
    // f(4) = 0.3/2·(1 + cos(π·4/12)) = 0.225 of the kept entries
    expect(grown).toBe(Math.round(riglFraction(0.3, 4, 12, 1) * countKept(before)));
    await expectPrunedZero(r, plugin, readOptimizer(dir));
    r.model.dispose();
  });

  it('GMP prunes from dense to the target along the cubic schedule', async () => {
    const plugin = sparseTraining({ sparsity: 0.8, pattern: 'block:8', mode: 'gmp', interval: 2, start: 0.25, end: 0.75 });
    const dens: number[] = [];
    const r = await train({
      config: tinyConfig({ steps: 16 }),
      corpus,
      plugins: [plugin, { name: 'd', plan: (p) => p.map((x) => ({ ...x, plugins: { ...x.plugins, d: {} } })), afterStep: () => void dens.push(plugin.densities().overall) }],
    });
    expect(dens[0]).toBe(1); // dense before start (step 4)
    // step 8 (u=8): sparsity 0.8·(1−(1−(8−4)/8)^3) = 0.7 per layer, in whole blocks
    expect(1 - dens[7]!).toBeCloseTo(gmpSparsity(0.8, 8, 16, 0.25, 0.75), 1);
    expect(1 - dens[15]!).toBeCloseTo(0.8, 2);
    for (let i = 1; i < dens.length; i++) expect(dens[i]!).toBeLessThanOrEqual(dens[i - 1]!);
    await expectPrunedZero(r, plugin);
    r.model.dispose();
  });

  it('sparse-to-dense: a final dense phase continues the optimizer and lets pruned weights grow back', async () => {
    const plugin = sparseTraining({ sparsity: 0.75, pattern: 'block:16', denseFraction: 0.25 });
    const events: TrainEvent[] = [];
    const r = await train({ config: tinyConfig({ steps: 16 }), corpus, plugins: [plugin], onEvent: (e) => events.push(e) });
    expect(r.phases.map((p) => [p.name, p.steps, p.optimizer])).toEqual([
      ['train', 12, 'reset'],
      ['dense', 4, 'continue'],
    ]);
    const steps = stepEvents(events);
    expect(steps[11]!.extra.density).toBeCloseTo(0.25, 12);
    expect(steps[15]!.extra.density).toBe(1);
    expect(plugin.masks().size).toBe(0);
    // pruned entries grow back, except where no gradient reaches them: a hidden unit whose fc column
    // and proj row were both pruned gets none (x^T·dy is 0 when dy is), so it stays dead
    const fc = await weights(r, 'blocks.0.mlp.fc.weight');
    const proj = await weights(r, 'blocks.0.mlp.proj.weight');
    const dff = r.model.config.dFF;
    const d = r.model.config.dModel;
    const deadUnits = Array.from({ length: dff }, (_, j) => j).filter((j) => {
      let alive = false;
      for (let i = 0; i < d; i++) alive ||= fc[i * dff + j] !== 0 || proj[j * d + i] !== 0;
      return !alive;
    });
    const zerosOutsideDead = fc.filter((x, k) => x === 0 && !deadUnits.includes(k % dff)).length;
    expect(zerosOutsideDead).toBe(0);
    expect(fc.filter((x) => x === 0).length).toBe(deadUnits.length * d);
    expect(deadUnits.length).toBeLessThan(dff / 2);
    // dense steps cost the dense FLOPs
    expect(steps[15]!.flops - steps[14]!.flops).toBeGreaterThan(steps[1]!.flops - steps[0]!.flops);
    r.model.dispose();
  });

  it('composed from config alone (plugins in any order): the same run as the plugins passed by hand', async () => {
    const settings = { patch: { patchSize: 2, fraction: 0.5 }, sparsity: { sparsity: 0.75, pattern: 'block:16', denseFraction: 0.1 } };
    const losses = (r: TrainResult) => r.losses.map((l) => l.loss);
    const byHand = await train({ config: tinyConfig({ steps: 12, model: { seqLen: 8 } }), corpus, plugins: [patchTraining(settings.patch), sparseTraining(settings.sparsity)] });
    // sparsity listed first: its registered order ('last') still puts it after patch ('first')
    const fromConfig = await train({ config: tinyConfig({ steps: 12, model: { seqLen: 8 }, plugins: { sparsity: settings.sparsity, patch: settings.patch } }), corpus });
    expect(fromConfig.plugins.map((p) => p.name)).toEqual(['patch', 'sparsity']);
    expect(fromConfig.phases.map((p) => p.name)).toEqual(['patch', 'token', 'dense']);
    expect(losses(fromConfig)).toEqual(losses(byHand));
    byHand.model.dispose();
    fromConfig.model.dispose();
  });

  it('composes with patch-level training in one run: patch, token and dense phases, masks held through both sparse phases', async () => {
    const plugin = sparseTraining({ sparsity: 0.75, pattern: 'block:16', denseFraction: 0.1 });
    const events: TrainEvent[] = [];
    const zeros: number[] = [];
    const r = await train({
      config: tinyConfig({ steps: 30, model: { seqLen: 8 } }),
      corpus,
      plugins: [
        patchTraining({ patchSize: 2, fraction: 0.5 }),
        plugin,
        {
          name: 'z',
          plan: (p) => p.map((x) => ({ ...x, plugins: { ...x.plugins, z: {} } })),
          async afterStep(ctx) {
            const m = plugin.masks().get('blocks.1.attn.proj.weight');
            if (!m) return;
            const w = (await ctx.model.p('blocks.1.attn.proj.weight').data()) as Float32Array;
            zeros.push(m.mask.reduce((a, k, i) => a + (k ? 0 : +(w[i] !== 0)), 0));
          },
        },
      ],
      onEvent: (e) => events.push(e),
    });
    expect(r.phases.map((p) => p.name)).toEqual(['patch', 'train', 'dense'].map((n) => (n === 'train' ? 'token' : n)));
    expect(r.phases.map((p) => Object.keys(p.plugins).sort().join('+'))).toEqual(['patch+sparsity+z', 'sparsity+z', 'sparsity+z']);
    expect(zeros.length).toBeGreaterThan(10);
    expect(zeros.every((z) => z === 0)).toBe(true);
    const s = stepEvents(events);
    expect(s[0]!.extra.density).toBeCloseTo(0.25, 12);
    expect(s.at(-1)!.extra.density).toBe(1);
    expect(Number.isFinite(r.valLoss)).toBe(true);
    r.model.dispose();
  });

  it('checkpoints keep masks and RigL state: an interrupted run resumes to the same losses', async () => {
    const cfg = tinyConfig({ steps: 12 });
    const make = () => sparseTraining({ sparsity: 0.75, pattern: 'block:8', mode: 'rigl', interval: 3, end: 1 });
    const full: TrainEvent[] = [];
    const a = await train({ config: cfg, corpus, outDir: tmp(), plugins: [make()], onEvent: (e) => full.push(e) });
    a.model.dispose();
    const dir = tmp();
    const ac = new AbortController();
    const b1 = await train({ config: cfg, corpus, outDir: dir, plugins: [make()], signal: ac.signal, onEvent: (e) => e.type === 'step' && e.step === 5 && ac.abort() });
    expect(b1.interrupted).toBe(true);
    b1.model.dispose();
    const second: TrainEvent[] = [];
    const resumed = make();
    const b2 = await train({ config: cfg, corpus, outDir: dir, resume: true, plugins: [resumed], onEvent: (e) => second.push(e) });
    const ref = new Map(stepEvents(full).map((e) => [e.step, e.loss]));
    const got = stepEvents(second);
    expect(got.map((e) => e.step)).toEqual([6, 7, 8, 9, 10, 11, 12]);
    for (const e of got) expect(e.loss).toBe(ref.get(e.step));
    expect(b2.valLoss).toBe(a.valLoss);
    expect(resumed.updates).toBe(3); // steps 3, 6, 9
    b2.model.dispose();
  });
});

describe('RigL update, checked on one round', () => {
  it('drops the smallest |w| of the kept entries and regrows the largest |∇| of the others', async () => {
    await useBackend('cpu');
    const plugin = sparseTraining({ sparsity: 0.5, pattern: 'unstructured', mode: 'rigl', interval: 2, end: 1, layers: ['mlp'] });
    const name = 'blocks.1.mlp.proj.weight';
    let old: Uint8Array | undefined;
    let grad: Float32Array | undefined;
    let w: Float32Array | undefined;
    // runs before the sparsity plugin in every hook: sees the dense gradient and the updated weights
    const probe: TrainerPlugin = {
      name: 'probe',
      plan: (p) => p.map((x) => ({ ...x, plugins: { ...x.plugins, probe: {} } })),
      transformGradients: (g, ctx) => {
        if (ctx.step === 2) grad = Float32Array.from(g[name]!.dataSync());
        return g;
      },
      afterStep: async (ctx) => {
        if (ctx.step === 1) old = plugin.masks().get(name)!.mask;
        if (ctx.step === 2) w = Float32Array.from((await ctx.model.p(name).data()) as Float32Array);
      },
    };
    const r = await train({ config: tinyConfig({ steps: 2 }), corpus, plugins: [probe, plugin] });
    const now = plugin.masks().get(name)!.mask;
    expect(countKept(now)).toBe(countKept(old!));
    let minStay = Infinity;
    let maxDrop = -Infinity;
    let minGrown = Infinity;
    let maxNotGrown = -Infinity;
    let grown = 0;
    now.forEach((k, i) => {
      if (old![i]) {
        if (k) minStay = Math.min(minStay, Math.abs(w![i]!));
        else maxDrop = Math.max(maxDrop, Math.abs(w![i]!));
      } else if (k) {
        grown++;
        minGrown = Math.min(minGrown, Math.abs(grad![i]!));
      } else maxNotGrown = Math.max(maxNotGrown, Math.abs(grad![i]!));
    });
    expect(grown).toBe(Math.round(riglFraction(0.3, 2, 2, 1) * countKept(old!)));
    expect(minStay).toBeGreaterThanOrEqual(maxDrop);
    expect(minGrown).toBeGreaterThanOrEqual(maxNotGrown);
    r.model.dispose();
  });
});
