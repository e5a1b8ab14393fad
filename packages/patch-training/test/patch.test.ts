import { describe, it, expect } from 'vitest';
import { tf, useBackend, crossEntropy } from '@patchflow/tensor';
import { tinyConfigWith, whaleCorpus } from '@patchflow/test-fixtures';
import {
  train,
  resolveConfig,
  finalizeModelConfig,
  neftune,
  buildPlan,
  tokenBatch,
  tokenLayout,
  GPT,
  PluginError,
  ConfigError,
  learningRate,
  type TrainEvent,
  type TrainerPlugin,
  type StepContext,
} from '@patchflow/trainer';
import {
  patchTraining,
  patchLayout,
  patchBatch,
  averagePatches,
  patchLoss,
  planCost,
  expectedRelativeCost,
  resolvePatchOptions,
  describePlan,
} from '../src/index.js';

const text = whaleCorpus.text;
const corpus = whaleCorpus;
const tinyConfig = tinyConfigWith(resolveConfig);
const stepEvents = (events: TrainEvent[]) => events.filter((e): e is Extract<TrainEvent, { type: 'step' }> => e.type === 'step');

describe('options', () => {
  it('has the defaults K=4, λ=2/3, optimizer reset', () => {
    expect(resolvePatchOptions({})).toEqual({ patchSize: 4, fraction: 2 / 3, optimizer: 'reset' });
  });
  it.each([
    [{ patchSize: 0 }, /patchSize.*integer >= 1, got 0/],
    [{ patchSize: -2 }, /patchSize.*integer >= 1/],
    [{ patchSize: 2.5 }, /patchSize.*integer >= 1, got 2.5/],
    [{ patchSize: '4' }, /patchSize.*integer >= 1, got "4"/],
    [{ fraction: 1 }, /fraction.*\[0, 1\), got 1/],
    [{ fraction: 1.5 }, /fraction.*\[0, 1\)/],
    [{ fraction: -0.1 }, /fraction.*\[0, 1\)/],
    [{ fraction: Number.NaN }, /fraction.*\[0, 1\)/],
    [{ optimizer: 'keep' }, /optimizer.*"reset" or "continue"/],
    [{ patchsize: 4 }, /unknown key "plugins.patch.patchsize"/],
  ])('rejects %j with a PluginError (a ConfigError)', (opts, msg) => {
    let err: unknown;
    try {
      patchTraining(opts as Record<string, unknown>);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PluginError);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).name).toBe('PluginError');
    expect((err as Error).message).toMatch(msg);
  });

  it('λ = 0 leaves the plan a single token-level phase', () => {
    const plan = buildPlan([patchTraining({ fraction: 0 })], tinyConfig());
    expect(plan).toEqual([{ name: 'train', fraction: 1, plugins: {}, optimizer: 'reset' }]);
  });

  it('splits the first phase into patch (λ) and token (1 − λ), other plugins in both', () => {
    const plan = buildPlan([neftune(5), patchTraining({ patchSize: 8, fraction: 0.75, optimizer: 'continue' })], tinyConfig());
    expect(plan.map((p) => [p.name, p.fraction, p.optimizer, Object.keys(p.plugins).sort()])).toEqual([
      ['patch', 0.75, 'reset', ['neftune', 'patch']],
      ['token', 0.25, 'continue', ['neftune']],
    ]);
    expect(plan[0]!.plugins.patch).toEqual({ patchSize: 8, fraction: 0.75, optimizer: 'continue' });
  });

  it('a patch phase with fewer tokens than one patch sequence is an error before any step', async () => {
    // budget = 1 step × 1 row × 16 tokens = 16; λ·budget = 8 < K·T = 64
    const events: TrainEvent[] = [];
    const run = train({ config: tinyConfig({ steps: 1, batchSize: 1 }), corpus, plugins: [patchTraining({ fraction: 0.5 })], onEvent: (e) => events.push(e) });
    await expect(run).rejects.toThrow(/patch phase gets 8 tokens.*fewer than one patch sequence of K×seqLen = 64/);
    await expect(run).rejects.toBeInstanceOf(ConfigError);
    expect(events).toEqual([]);
  });

  it('a patch window longer than the training split is a DataError before any step', async () => {
    const small = { name: 'small', text: text.slice(0, 2000) }; // 1,800 training bytes < 128 × 17
    const events: TrainEvent[] = [];
    const run = train({ config: tinyConfig({ steps: 200 }), corpus: small, plugins: [patchTraining({ patchSize: 128 })], onEvent: (e) => events.push(e) });
    await expect(run).rejects.toThrow(/phase "patch" reads windows of 2176 tokens but the training split has only 1800/);
    expect(events).toEqual([]);
  });
});

describe('batch and embeddings', () => {
  it('cuts inputs and next-patch labels from each window (hand-worked, K=2, T=3)', () => {
    const layout = patchLayout(3, 2);
    expect(layout).toEqual({ inputTokens: 6, windowTokens: 8, positions: 3, labelsPerPosition: 2 });
    const windows = Int32Array.from([10, 11, 12, 13, 14, 15, 16, 17, 20, 21, 22, 23, 24, 25, 26, 27]);
    const b = patchBatch(windows, 2, layout);
    expect(Array.from(b.inputs)).toEqual([10, 11, 12, 13, 14, 15, 20, 21, 22, 23, 24, 25]);
    // patch 0 = (10, 11) predicts (12, 13); patch 1 predicts (14, 15); patch 2 predicts (16, 17)
    expect(Array.from(b.labels)).toEqual([12, 13, 14, 15, 16, 17, 22, 23, 24, 25, 26, 27]);
  });

  it('K = 1 cuts exactly the token-level batch', () => {
    const windows = Int32Array.from({ length: 3 * 9 }, (_, i) => (i * 7) % 13);
    const a = patchBatch(windows, 3, patchLayout(8, 1));
    const b = tokenBatch(windows, 3, tokenLayout(8));
    expect(a.inputs).toEqual(b.inputs);
    expect(a.labels).toEqual(b.labels);
  });

  it.each(['cpu', 'tfjs-cpu'])('the patch embedding is the mean of its K token embeddings (%s)', async (backend) => {
    await useBackend(backend);
    const [B, K, T, d] = [2, 3, 4, 5];
    const data = Float32Array.from({ length: B * K * T * d }, (_, i) => Math.sin(i * 1.7) * 3 + (i % 5));
    const out = tf.tidy(() => averagePatches(tf.tensor3d(data, [B, K * T, d]), K));
    expect(out.shape).toEqual([B, T, d]);
    const got = out.dataSync();
    out.dispose();
    for (let b = 0; b < B; b++)
      for (let t = 0; t < T; t++)
        for (let c = 0; c < d; c++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += data[(b * K * T + t * K + k) * d + c]!;
          expect(got[(b * T + t) * d + c]).toBeCloseTo(s / K, 5);
        }
  });
});

describe('patch loss', () => {
  it.each(['cpu', 'tfjs-cpu'])('matches a hand-computed value on a 3-token vocabulary (%s)', async (backend) => {
    await useBackend(backend);
    // row 0: softmax([0, ln 2, ln 3]) = [1/6, 2/6, 3/6]; labels (1, 2) -> (ln 3 + ln 2) / 2 = ln 6 / 2
    // row 1: softmax([0, 0, 0]) = 1/3 each; labels (0, 0) -> ln 3
    // row 2: softmax([ln 4, 0, 0]) = [4/6, 1/6, 1/6]; labels (0, 2) -> (ln 1.5 + ln 6) / 2 = ln 9 / 2
    const logits = tf.tensor2d([0, Math.log(2), Math.log(3), 0, 0, 0, Math.log(4), 0, 0], [3, 3]);
    const labels = tf.tensor2d([1, 2, 0, 0, 0, 2], [3, 2], 'int32');
    const loss = patchLoss(logits, labels);
    const expected = (Math.log(6) / 2 + Math.log(3) + Math.log(9) / 2) / 3;
    expect(loss.dataSync()[0]).toBeCloseTo(expected, 6);
    tf.dispose([logits, labels, loss]);
  });

  it('K = 1 training equals token-level training exactly (same losses, same weights)', async () => {
    await useBackend('cpu');
    const cfg = tinyConfig({ steps: 8 });
    const plain: TrainEvent[] = [];
    const a = await train({ config: cfg, corpus, onEvent: (e) => plain.push(e) });
    const patched: TrainEvent[] = [];
    const b = await train({ config: cfg, corpus, plugins: [patchTraining({ patchSize: 1, fraction: 0.5, optimizer: 'continue' })], onEvent: (e) => patched.push(e) });
    expect(b.phases.map((p) => [p.name, p.steps])).toEqual([['patch', 4], ['token', 4]]);
    const la = stepEvents(plain).map((e) => e.loss);
    const lb = stepEvents(patched).map((e) => e.loss);
    expect(lb).toEqual(la);
    expect(b.valLoss).toBe(a.valLoss);
    const wa = await a.model.exportWeights();
    const wb = await b.model.exportWeights();
    for (const k of Object.keys(wa)) expect(wb[k]!.data).toEqual(wa[k]!.data);
    a.model.dispose();
    b.model.dispose();
  });

  it.each(['cpu', 'tfjs-cpu'])('K = 1 patch loss of a model equals its next-token loss (%s)', async (backend) => {
    await useBackend(backend);
    const m = new GPT(finalizeModelConfig(tinyConfig().model, 40), 3);
    const T = 8;
    const windows = Int32Array.from({ length: 2 * (T + 1) }, (_, i) => (i * 11 + 3) % 40);
    const pb = patchBatch(windows, 2, patchLayout(T, 1));
    const tb = tokenBatch(windows, 2, tokenLayout(T));
    const [lp, lt] = tf.tidy(() => {
      const emb = averagePatches(m.embed(tf.tensor2d(pb.inputs, [2, T], 'int32')), 1);
      const p = patchLoss(m.forwardEmbeddings(emb), tf.tensor2d(pb.labels, [2 * T, 1], 'int32'));
      const t = tf.mean(crossEntropy(m.forward(tf.tensor2d(tb.inputs, [2, T], 'int32')), tf.tensor2d(tb.labels, [2 * T, 1], 'int32')));
      return [p.dataSync()[0]!, t.dataSync()[0]!];
    });
    expect(lp).toBe(lt);
    m.dispose();
  });

  it.each(['cpu', 'tfjs-cpu'])('its gradient through the averaged embeddings and the model matches finite differences (%s)', async (backend) => {
    await useBackend(backend);
    const V = 11;
    const [K, T, B] = [3, 4, 2];
    const m = new GPT(finalizeModelConfig({ ...tinyConfig().model, dModel: 8, seqLen: T }, V), 5);
    // larger weights than the init so the gradients are well above float32 noise
    for (const s of m.specs) {
      const v = m.p(s.name);
      const n = v.size;
      const data = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + s.name.length * 78.233) * 0.4);
      if (s.init === 'ones') data.forEach((x, i) => (data[i] = 1 + x * 0.5));
      v.assign(tf.tensor(data, v.shape));
    }
    const windows = Int32Array.from({ length: B * K * (T + 1) }, (_, i) => (i * 7 + 2) % V);
    const batch = patchBatch(windows, B, patchLayout(T, K));
    const lossFn = () =>
      tf.tidy(() => {
        const emb = averagePatches(m.embed(tf.tensor2d(batch.inputs, [B, K * T], 'int32')), K);
        return patchLoss(m.forwardEmbeddings(emb), tf.tensor2d(batch.labels, [B * T, K], 'int32'));
      });
    const names = ['tok_emb.weight', 'blocks.0.attn.qkv.weight', 'blocks.0.mlp.fc.weight', 'ln_f.weight', 'pos_emb.weight'];
    const vars = names.map((n) => m.p(n));
    const { grads } = tf.variableGrads(lossFn as () => tf.Scalar, vars);
    const byName = m.gradsByParam(grads);
    let checked = 0;
    for (const name of names) {
      const v = m.p(name);
      const g = byName[name]!.dataSync();
      // the 4 largest-magnitude gradient entries of each parameter
      const idx = Array.from(g.keys()).sort((a, b) => Math.abs(g[b]!) - Math.abs(g[a]!)).slice(0, 4);
      expect(Math.abs(g[idx[3]!]!)).toBeGreaterThan(0.02); // well above the tolerance's absolute floor
      for (const i of idx) {
        const base = v.dataSync().slice();
        const h = 1e-2;
        const at = (delta: number) => {
          const d = base.slice();
          d[i]! += delta;
          v.assign(tf.tensor(d, v.shape));
          const l = lossFn();
          const x = l.dataSync()[0]!;
          l.dispose();
          return x;
        };
        const fd = (at(h) - at(-h)) / (2 * h);
        v.assign(tf.tensor(base, v.shape));
        expect(Math.abs(fd - g[i]!)).toBeLessThan(2e-3 + 2e-2 * Math.abs(g[i]!));
        checked++;
      }
    }
    expect(checked).toBe(20);
    tf.dispose(Object.values(grads));
    m.dispose();
  });
});

/** A plugin active in every phase that records weights and batches around the phase switch. */
function probe() {
  const rec: {
    endOfPatch?: Record<string, Float32Array>;
    tokenStart?: Record<string, Float32Array>;
    tokenStartOptimizerT?: number;
    firstTokenBatch?: { inputs: Int32Array; labels: Int32Array; rows: number };
  } = {};
  const snapshot = (ctx: { model: GPT }) => Object.fromEntries(ctx.model.specs.map((s) => [s.name, ctx.model.p(s.name).dataSync().slice() as Float32Array]));
  const plugin: TrainerPlugin = {
    name: 'probe',
    plan: (phases) => phases.map((p) => ({ ...p, plugins: { ...p.plugins, probe: {} } })),
    afterStep(ctx: StepContext) {
      if (ctx.phase.name === 'patch' && ctx.phaseStep === ctx.phaseSteps - 1) rec.endOfPatch = snapshot(ctx);
    },
    phaseStart(ctx) {
      if (ctx.phase.name === 'token') {
        rec.tokenStart = snapshot(ctx);
        rec.tokenStartOptimizerT = ctx.optimizer.t;
      }
    },
    // only reached in the token phase: in the patch phase the patch plugin (first) owns makeBatch
    makeBatch(windows, rows, layout) {
      const b = tokenBatch(windows, rows, layout);
      rec.firstTokenBatch ??= { inputs: b.inputs.slice(), labels: b.labels.slice(), rows };
      return b;
    },
  };
  return { plugin, rec };
}

describe('the plan in training', () => {
  it.each(['reset', 'continue'] as const)(
    'trains a patch phase then a token phase; the first token loss is token-level on the last patch weights (optimizer %s)',
    async (mode) => {
      await useBackend('cpu');
      const { plugin, rec } = probe();
      const events: TrainEvent[] = [];
      const cfg = tinyConfig();
      const r = await train({ config: cfg, corpus, plugins: [patchTraining({ fraction: 2 / 3, optimizer: mode }), plugin], onEvent: (e) => events.push(e) });
      // budget 12 × 4 × 16 = 768 tokens: patch 512 / (4 rows × 64) = 2 steps, token 256 / 64 = 4 steps
      expect(r.phases.map((p) => [p.name, p.steps, p.layout.positions, p.layout.labelsPerPosition, p.optimizer])).toEqual([
        ['patch', 2, 16, 4, 'reset'],
        ['token', 4, 16, 1, mode],
      ]);
      expect(events.filter((e) => e.type === 'phase').map((e) => (e as { phase: { name: string } }).phase.name)).toEqual(['patch', 'token']);
      const steps = stepEvents(events);
      expect(steps.map((s) => s.phase)).toEqual(['patch', 'patch', 'token', 'token', 'token', 'token']);
      expect(r.tokens).toBe(768);
      expect(r.phases[0]!.flopsPerStep).toBe(r.phases[1]!.flopsPerStep); // same positions per row
      expect(r.flops).toBe(6 * r.phases[1]!.flopsPerStep);
      expect(steps[0]!.extra).toEqual({ patchSize: 4 });

      // parameters carry over unchanged
      for (const k of Object.keys(rec.endOfPatch!)) expect(rec.tokenStart![k]).toEqual(rec.endOfPatch![k]);
      // optimizer: fresh moments and a restarted warmup (reset), or carried on (continue)
      const lr = cfg.optim.lr;
      if (mode === 'reset') {
        expect(rec.tokenStartOptimizerT).toBe(0);
        expect(steps[2]!.lr).toBeCloseTo(lr / 3, 12); // warmup step 1 of 2 again: lr·1/(2+1)
        expect(steps.slice(2).map((s) => s.lr)).toEqual([0, 1, 2, 3].map((i) => learningRate(cfg.optim, i, 4)));
      } else {
        expect(rec.tokenStartOptimizerT).toBe(2);
        expect(steps[2]!.lr).toBeCloseTo(lr, 12); // step 3 of one 6-step schedule: warmup done, cosine at its top
        expect(steps.map((s) => s.lr)).toEqual([0, 1, 2, 3, 4, 5].map((i) => learningRate(cfg.optim, i, 6)));
      }

      // recompute the first token-phase loss by hand on the captured weights and batch
      const m = new GPT(r.model.config, 99);
      m.loadWeights(Object.fromEntries(Object.entries(rec.endOfPatch!).map(([k, data]) => [k, { shape: m.p(k).shape, data }])));
      const b = rec.firstTokenBatch!;
      const T = cfg.model.seqLen;
      const loss = tf.tidy(() => tf.mean(crossEntropy(m.forward(tf.tensor2d(b.inputs, [b.rows, T], 'int32')), tf.tensor2d(b.labels, [b.rows * T, 1], 'int32'))).dataSync()[0]!);
      expect(steps[2]!.loss).toBeCloseTo(loss, 6);
      m.dispose();
      r.model.dispose();
    },
  );

  it('the plan costs λ/K + 1 − λ of token-level training', async () => {
    await useBackend('cpu');
    const r = await train({ config: tinyConfig(), corpus, plugins: [patchTraining()] });
    const c = planCost(r.phases);
    expect(c.phases.map((p) => [p.name, p.tokens])).toEqual([['patch', 512], ['token', 256]]);
    expect(c.total).toEqual({ tokens: 768, flops: r.flops });
    const f = r.phases[1]!.flopsPerStep;
    expect(c.tokenLevel.flops).toBe(12 * f);
    expect(c.relative).toBe(0.5);
    expect(expectedRelativeCost(4, 2 / 3)).toBeCloseTo(0.5, 12);
    expect(describePlan(r.phases)).toMatch(/^plan: patch \(K=4\) 67% of tokens, 2 steps, .*; token 33% of tokens, 4 steps, .*optimizer reset; cost 0\.500× dense token-level/);
    r.model.dispose();
  });

  it.each(['cpu', 'tfjs-cpu'])('composes with neftune in one run (%s)', async (backend) => {
    await useBackend(backend);
    const cfg = tinyConfig({ backend, steps: 8 });
    const alone: TrainEvent[] = [];
    const a = await train({ config: cfg, corpus, plugins: [patchTraining({ fraction: 0.5 })], onEvent: (e) => alone.push(e) });
    const both: TrainEvent[] = [];
    const b = await train({ config: cfg, corpus, plugins: [patchTraining({ fraction: 0.5 }), neftune(5)], onEvent: (e) => both.push(e) });
    expect(b.phases.map((p) => [p.name, Object.keys(p.plugins).sort()])).toEqual([
      ['patch', ['neftune', 'patch']],
      ['token', ['neftune']],
    ]);
    const la = stepEvents(alone);
    const lb = stepEvents(both);
    expect(lb.map((s) => s.phase)).toEqual(la.map((s) => s.phase));
    expect(lb.every((s) => Number.isFinite(s.loss))).toBe(true);
    // the noise is applied in both phases: the first loss of each phase moves
    expect(lb[0]!.loss).not.toBe(la[0]!.loss);
    const firstToken = la.findIndex((s) => s.phase === 'token');
    expect(lb[firstToken]!.loss).not.toBe(la[firstToken]!.loss);
    expect(Number.isFinite(b.valLoss)).toBe(true);
    a.model.dispose();
    b.model.dispose();
  });
});
