import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it, expect } from 'vitest';
import { tf, useBackend } from '@patchflow/tensor';
import { tempDir, tinyConfigWith, whaleCorpus } from '@patchflow/test-fixtures';
import {
  train,
  resolveConfig,
  neftune,
  labelSmoothing,
  buildPlan,
  BatchSampler,
  TokenDataset,
  ByteTokenizer,
  Rng,
  GPT,
  DivergenceError,
  PluginError,
  finalizeModelConfig,
  readSafetensors,
  type TrainEvent,
  type TrainerPlugin,
} from '../src/index.js';

const text = whaleCorpus.text;
const corpus = whaleCorpus;
const tinyConfig = tinyConfigWith(resolveConfig, { steps: 6 });
const tmp = () => tempDir('pf-trainer-');
const stepLosses = (events: TrainEvent[]) => events.filter((e) => e.type === 'step').map((e) => [e.step, (e as { loss: number }).loss] as const);

describe('train', () => {
  it('learns: the loss falls and the final validation loss is measured', async () => {
    const events: TrainEvent[] = [];
    const r = await train({ config: tinyConfig({ steps: 30 }), corpus, onEvent: (e) => events.push(e) });
    const l = stepLosses(events);
    expect(l.length).toBe(30);
    expect(l.at(-1)![1]).toBeLessThan(l[0]![1] - 1);
    expect(Number.isFinite(r.valLoss)).toBe(true);
    expect(r.flops).toBe(30 * r.phases[0]!.flopsPerStep);
    r.model.dispose();
  });

  it('resumes to exactly the losses of an uninterrupted run (cpu backend)', async () => {
    const full: TrainEvent[] = [];
    const dirA = tmp();
    const a = await train({ config: tinyConfig({ gradAccum: 2 }), corpus, outDir: dirA, onEvent: (e) => full.push(e) });
    a.model.dispose();

    const dirB = tmp();
    const ac = new AbortController();
    const first: TrainEvent[] = [];
    const b1 = await train({
      config: tinyConfig({ gradAccum: 2 }),
      corpus,
      outDir: dirB,
      signal: ac.signal,
      onEvent: (e) => {
        first.push(e);
        if (e.type === 'step' && e.step === 3) ac.abort();
      },
    });
    expect(b1.interrupted).toBe(true);
    expect(b1.steps).toBe(3);
    b1.model.dispose();
    const second: TrainEvent[] = [];
    const b2 = await train({ config: tinyConfig({ gradAccum: 2 }), corpus, outDir: dirB, resume: true, onEvent: (e) => second.push(e) });
    const resumed = stepLosses(second);
    expect(resumed.map((x) => x[0])).toEqual([4, 5, 6]);
    const ref = new Map(stepLosses(full));
    for (const [step, loss] of resumed) expect(loss).toBe(ref.get(step));
    expect(b2.valLoss).toBe(a.valLoss);
    // metrics.jsonl holds each step once
    const steps = fs.readFileSync(path.join(dirB, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.type === 'train').map((m) => m.step);
    expect(steps).toEqual([1, 2, 3, 4, 5, 6]);
    // the checkpoint is a safetensors file with every parameter
    const st = readSafetensors(path.join(dirB, 'checkpoint', 'model.safetensors'));
    expect(Object.keys(st.tensors).sort()).toEqual(b2.model.specs.map((s) => s.name).sort());
    b2.model.dispose();
  });

  it('stops on a diverging loss, naming the step and keeping the last good checkpoint', async () => {
    const dir = tmp();
    const cfg = tinyConfig({ steps: 50, checkpointEvery: 1, optim: { lr: 1e4, gradClip: 0, warmupSteps: 0 } });
    let err: unknown;
    try {
      await train({ config: cfg, corpus, outDir: dir });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DivergenceError);
    const m = /diverged at step (\d+).*last good checkpoint \(step (\d+)\)/.exec((err as Error).message);
    expect(m).not.toBeNull();
    const state = JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint', 'state.json'), 'utf8'));
    expect(state.step).toBe(Number(m![2]));
    expect(state.step).toBeLessThan(Number(m![1]));
  });
});

describe('plugins', () => {
  it('label smoothing matches a hand-worked value', () => {
    // logits [0, ln 2] -> p = [1/3, 2/3]; label 1, eps 0.2, V 2: target [0.1, 0.9]
    const l = labelSmoothing(0.2).loss!(tf.tensor2d([[0, Math.log(2)]]), tf.tensor2d([[1]], [1, 1], 'int32'), {} as never);
    expect(l.dataSync()[0]).toBeCloseTo(-(0.1 * Math.log(1 / 3) + 0.9 * Math.log(2 / 3)), 6);
  });

  it('neftune noise is uniform within alpha / sqrt(T d)', () => {
    const emb = tf.zeros([2, 8, 32]) as tf.Tensor3D;
    const out = neftune(4).transformEmbeddings!(emb, {} as never).dataSync();
    const bound = 4 / Math.sqrt(8 * 32);
    expect(Math.max(...Array.from(out).map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...Array.from(out).map(Math.abs))).toBeGreaterThan(0.9 * bound);
  });

  it('two plugins compose in one run: the trainer applies noise then the replaced loss', async () => {
    await useBackend('cpu');
    const cfg = tinyConfig({ steps: 1 });
    const events: TrainEvent[] = [];
    const r = await train({ config: cfg, corpus, plugins: [neftune(5, 99), labelSmoothing(0.1)], onEvent: (e) => events.push(e) });
    expect(r.phases[0]!.plugins).toEqual({ neftune: { alpha: 5 }, 'label-smoothing': { eps: 0.1 } });
    // recompute step 1's loss by hand from the same initial weights and the same batch
    const tok = new ByteTokenizer();
    const ids = tok.encode(corpus.text);
    const m = finalizeModelConfig(cfg.model, tok.vocabSize);
    const model = new GPT(m, cfg.seed);
    const ds = new TokenDataset(ids, { valFraction: cfg.valFraction, minTokens: m.seqLen + 1 });
    const windows = new BatchSampler(ds.trainTokens, new Rng(cfg.seed + 1)).windows(cfg.batchSize, m.seqLen + 1);
    const inputs: number[] = [];
    const labels: number[] = [];
    for (let row = 0; row < cfg.batchSize; row++) {
      const w = windows.subarray(row * (m.seqLen + 1), (row + 1) * (m.seqLen + 1));
      inputs.push(...w.subarray(0, m.seqLen));
      labels.push(...w.subarray(1));
    }
    const noisy = neftune(5, 99).transformEmbeddings!(model.embed(tf.tensor2d(inputs, [cfg.batchSize, m.seqLen], 'int32')), {} as never);
    const logits = model.forwardEmbeddings(noisy);
    const want = labelSmoothing(0.1).loss!(logits, tf.tensor2d(labels, [labels.length, 1], 'int32'), {} as never).dataSync()[0]!;
    const got = (events.find((e) => e.type === 'step') as { loss: number }).loss;
    expect(got).toBeCloseTo(want, 5);
    // and without the plugins the first loss differs
    const plain: TrainEvent[] = [];
    await train({ config: cfg, corpus, onEvent: (e) => plain.push(e) });
    expect(Math.abs((plain.find((e) => e.type === 'step') as { loss: number }).loss - got)).toBeGreaterThan(1e-4);
  });

  it('refuses two plugins that both replace the loss in one phase', () => {
    const a: TrainerPlugin = { ...labelSmoothing(0.1) };
    const b: TrainerPlugin = { ...labelSmoothing(0.2), name: 'other', plan: (ph) => ph.map((p) => ({ ...p, plugins: { ...p.plugins, other: {} } })) };
    expect(() => buildPlan([a, b], tinyConfig())).toThrow(PluginError);
  });

  it('a plugin can split the plan into phases with their own settings and token shares', async () => {
    const seen: string[] = [];
    const splitter: TrainerPlugin = {
      name: 'warm-smoothing',
      plan: (phases) => [
        { ...phases[0]!, name: 'smooth', fraction: 0.5, plugins: { ...phases[0]!.plugins, 'warm-smoothing': { eps: 0.3 } } },
        { ...phases[0]!, name: 'plain', fraction: 0.5, optimizer: 'continue' },
      ],
      phaseStart: (ctx) => void seen.push(`${ctx.phase.name}:${JSON.stringify(ctx.settings)}`),
      loss: (logits, labels) => labelSmoothing(0.3).loss!(logits, labels, {} as never),
    };
    const r = await train({ config: tinyConfig({ steps: 4 }), corpus, plugins: [splitter] });
    expect(r.phases.map((p) => [p.name, p.steps])).toEqual([
      ['smooth', 2],
      ['plain', 2],
    ]);
    expect(seen).toEqual(['smooth:{"eps":0.3}']);
    // continuous schedule: one segment spanning both phases
    expect(r.phases.map((p) => [p.scheduleStart, p.scheduleSteps])).toEqual([
      [0, 4],
      [0, 4],
    ]);
  });
});
