/**
 * The compiled training step (lowerStep + StepProgram) against the eager tfjs step: the loss and every
 * gradient of one step on the same batch, then whole training runs, for dense (learned and rotary
 * positions, tied and untied heads), patch-level (K=4) and block-sparse configs. Runs in poison mode
 * (the activation arena is filled with NaN before every micro-batch), so a kernel that read memory the
 * plan had not written shows up as NaN. The eager reference runs on the `cpu` backend (its kernels are
 * tested against float64 elsewhere; webgpu-vs-cpu.test.ts checks the two eager backends agree).
 */
import { describe, expect, inject, it } from 'vitest';
import { crossEntropy, tf } from '@patchflow/tensor';
import '@patchflow/patch-training';
import '@patchflow/sparsity';
import { sparseTraining } from '@patchflow/sparsity';
import {
  GPT,
  resolveConfig,
  tokenBatch,
  tokenLayout,
  train,
  type Batch,
  type TrainEvent,
} from '@patchflow/trainer';
import { patchBatch, patchLayout } from '@patchflow/patch-training';
import { tempDir, whaleText } from '@patchflow/test-fixtures';
import { GpuLimitError, GpuRuntimeError, compileWebGpuStep, getComputeDevice } from '../src/index.js';
import { tinyPhase } from './compiled-helpers.js';

const gate = inject('webgpu');
const text = whaleText(400);

const setup = tinyPhase;

/** Seeded token windows, as a batch of the layout (token-level or patch-level with K labels). */
function batchOf(k: number, rows: number, t: number, seed: number): Batch {
  const layout = k === 1 ? tokenLayout(t) : patchLayout(t, k);
  const windows = Int32Array.from({ length: rows * layout.windowTokens }, (_, i) => (i * 37 + seed * 101 + ((i * i) % 13)) % 256);
  return k === 1 ? tokenBatch(windows, rows, layout) : patchBatch(windows, rows, layout);
}

/** The eager step's loss and gradients (tf.variableGrads), patch averaging and K labels included. */
async function eagerGradients(gpt: GPT, batch: Batch, k: number) {
  const vars = gpt.specs.map((s) => gpt.p(s.name));
  const { value, grads } = tf.variableGrads(() => {
    let emb = gpt.embed(tf.tensor2d(batch.inputs, [batch.rows, batch.layout.inputTokens], 'int32'));
    if (k > 1) emb = tf.mean(tf.reshape(emb, [batch.rows, batch.layout.positions, k, gpt.config.dModel]), 2) as tf.Tensor3D;
    const logits = gpt.forwardEmbeddings(emb);
    return tf.mean(crossEntropy(logits, tf.tensor2d(batch.labels, [batch.rows * batch.layout.positions, k], 'int32'))) as tf.Scalar;
  }, vars);
  const g = gpt.gradsByParam(grads);
  const out = new Map<string, Float32Array>();
  for (const s of gpt.specs) out.set(s.name, (await g[s.name]!.data()) as Float32Array);
  return { loss: (await value.data())[0]!, grads: out };
}

/** max |a − b| / max |b| over every parameter, and the worst parameter. */
function worstRelative(a: Map<string, Float32Array>, b: Map<string, Float32Array>): { rel: number; name: string } {
  let rel = 0;
  let name = '';
  for (const [n, ref] of b) {
    const got = a.get(n)!;
    let d = 0;
    let m = 0;
    for (let i = 0; i < ref.length; i++) {
      d = Math.max(d, Math.abs(got[i]! - ref[i]!));
      m = Math.max(m, Math.abs(ref[i]!));
    }
    const r = Number.isNaN(d) ? Infinity : d / (m + 1e-20);
    if (r > rel) [rel, name] = [r, n];
  }
  return { rel, name };
}

describe.skipIf(!gate.ok)('compiled step vs the eager step: loss and every gradient (poisoned arena)', () => {
  for (const [label, model, k] of [
    ['dense, learned positions, tied head', {}, 1],
    ['dense, rotary positions, untied head', { positions: 'rotary', tiedEmbeddings: false }, 1],
    ['patch-level K=4', {}, 4],
  ] as const) {
    it(label, async () => {
      const { config, gpt, optimizer, phase } = await setup(model);
      const layoutPhase = k === 1 ? phase : { ...phase, layout: patchLayout(16, k) };
      const step = await compileWebGpuStep({ config, model: gpt, optimizer, phase: layoutPhase, contribution: k > 1 ? { patchSize: k } : {} }, { poison: true });
      if ('reason' in step) throw new Error(step.reason);
      await step.load();
      const batch = batchOf(k, 3, 16, 1);
      const got = await step.gradients([batch]);
      const want = await eagerGradients(gpt, batch, k);
      expect(Math.abs(got.loss - want.loss)).toBeLessThan(1e-5);
      const w = worstRelative(got.grads, want.grads);
      expect(w.rel, `worst gradient: ${w.name}`).toBeLessThan(2e-4);
      step.dispose();
      gpt.dispose();
    });
  }

  it('block-sparse 75% (block 16): pruned gradients exactly zero, the rest as the eager masked step', async () => {
    const { config, gpt, optimizer, phase } = await setup({});
    const plugin = sparseTraining({ sparsity: 0.75, pattern: 'block:16' });
    await plugin.init!({ config, model: gpt, optimizer });
    const contribution = plugin.compiled!({ config, model: gpt, optimizer, phase, phaseIndex: 0, settings: plugin.settings });
    if ('reason' in contribution) throw new Error(contribution.reason);
    expect([...contribution.sparsity!.masks.values()].every((m) => !!m.block)).toBe(true);
    const step = await compileWebGpuStep({ config, model: gpt, optimizer, phase, contribution }, { poison: true });
    if ('reason' in step) throw new Error(step.reason);
    await step.load();
    const batch = batchOf(1, 3, 16, 2);
    const got = await step.gradients([batch]);
    const want = await eagerGradients(gpt, batch, 1);
    // the eager reference's gradients, masked as the sparsity plugin masks them
    for (const [name, m] of plugin.masks()) {
      const g = want.grads.get(name)!;
      for (let i = 0; i < g.length; i++) if (!m.mask[i]) g[i] = 0;
      const c = got.grads.get(name)!;
      for (let i = 0; i < c.length; i++) if (!m.mask[i]) expect(c[i], `${name}[${i}] is pruned`).toBe(0);
    }
    expect(Math.abs(got.loss - want.loss)).toBeLessThan(1e-5);
    const w = worstRelative(got.grads, want.grads);
    expect(w.rel, `worst gradient: ${w.name}`).toBeLessThan(2e-4);
    step.dispose();
    gpt.dispose();
  });
});

describe.skipIf(!gate.ok)('training with the compiled step', () => {
  const base = { model: { nLayer: 2, nHead: 2, dModel: 32, seqLen: 16 }, batchSize: 4, evalEvery: 0, evalBatches: 2, checkpointEvery: 0 };
  const run = async (over: Record<string, unknown>) => {
    const logs: string[] = [];
    const r = await train({ config: resolveConfig(base, over), corpus: { name: 't', text }, onEvent: (e: TrainEvent) => e.type === 'log' && logs.push(e.message) });
    const out = { losses: r.losses.map((l) => l.loss), val: r.valLoss, logs, phases: r.phases.map((p) => p.name) };
    r.model.dispose();
    return out;
  };

  for (const [label, over] of [
    ['dense, 50 steps', { steps: 50 }],
    ['patch-level K=4 on half the tokens, 50 steps', { steps: 50, plugins: { patch: { patchSize: 4, fraction: 0.5 } } }],
    ['block-sparse 75% with a final dense phase, gradient accumulation 2, 50 steps', { steps: 50, gradAccum: 2, plugins: { sparsity: { sparsity: 0.75, pattern: 'block:16', denseFraction: 0.2 } } }],
  ] as const) {
    it(`${label}: the loss curve of the eager step`, async () => {
      const compiled = await run({ ...over, backend: 'webgpu' });
      const eager = await run({ ...over, backend: 'cpu' });
      expect(compiled.logs.filter((l) => / compiled step on webgpu: /.test(l))).toHaveLength(compiled.phases.length);
      expect(compiled.losses).toHaveLength(eager.losses.length);
      compiled.losses.forEach((l, i) => expect(Math.abs(l - eager.losses[i]!), `step ${i + 1}`).toBeLessThan(1e-4));
      expect(Math.abs(compiled.val - eager.val)).toBeLessThan(1e-4);
      expect(eager.losses.at(-1)!).toBeLessThan(eager.losses[0]! - 0.5);
    });
  }

  it('a plugin without a compiled form runs the eager step, and says which', async () => {
    const r = await run({ steps: 3, backend: 'webgpu', plugins: { neftune: { alpha: 5 } } });
    expect(r.logs).toContain('phase "train" runs the eager tfjs step on webgpu: plugin "neftune" has no compiled form');
    expect(r.losses).toHaveLength(3);
  });

  it('compile: false forces the eager step', async () => {
    const r = await run({ steps: 2, backend: 'webgpu', compile: false });
    expect(r.logs.some((l) => l.includes('compiled'))).toBe(false);
  });

  it('a checkpoint of the compiled path resumes on the eager path (and back) to the same losses', async () => {
    const whole = await run({ steps: 20, backend: 'webgpu' });
    const config = resolveConfig(base, { steps: 20, checkpointEvery: 0, backend: 'webgpu' });
    for (const [first, then] of [[true, false], [false, true]]) {
      const dir = tempDir('pf-compiled-resume-');
      let n = 0;
      const ac = new AbortController();
      const a = await train({ config: { ...config, compile: first }, corpus: { name: 't', text }, outDir: dir, signal: ac.signal, onEvent: (e) => e.type === 'step' && ++n === 10 && ac.abort() });
      expect(a.interrupted).toBe(true);
      a.model.dispose();
      const logs: string[] = [];
      const b = await train({ config: { ...config, compile: then }, corpus: { name: 't', text }, outDir: dir, resume: true, onEvent: (e) => e.type === 'log' && logs.push(e.message) });
      expect(logs.some((l) => l.includes('compiled step on webgpu'))).toBe(then);
      const losses = [...a.losses, ...b.losses].map((l) => l.loss);
      expect(losses).toHaveLength(20);
      losses.forEach((l, i) => expect(Math.abs(l - whole.losses[i]!), `compile ${first} then ${then}: step ${i + 1}`).toBeLessThan(1e-4));
      b.model.dispose();
    }
  });
});

describe.skipIf(!gate.ok)('compiled step faults', () => {
  it('a model whose buffers exceed the adapter: a clear error naming the buffer, before step 1', async () => {
    const cd = await getComputeDevice();
    const limit = cd.device.limits.maxStorageBufferBindingSize;
    // logits [batch · 512, 256] of one more row than a binding holds
    const batch = Math.floor(limit / (512 * 256 * 4)) + 1;
    const { config, gpt, optimizer, phase } = await setup({ nLayer: 1, dModel: 8, nHead: 1, seqLen: 512 }, { batchSize: batch });
    const attempt = compileWebGpuStep({ config, model: gpt, optimizer, phase, contribution: {} });
    await expect(attempt).rejects.toThrow(GpuLimitError);
    await expect(attempt).rejects.toThrow(/^activation logits needs [\d.]+ [MG]iB in one binding, more than this adapter's maxStorageBufferBindingSize \([\d.]+ [MG]iB\); use a smaller model or batch$/);
    gpt.dispose();
  });

  it('a lost device ends the step with a clear error instead of a hang', async () => {
    const { config, gpt, optimizer, phase } = await setup({});
    const step = await compileWebGpuStep({ config, model: gpt, optimizer, phase, contribution: {} });
    if ('reason' in step) throw new Error(step.reason);
    await step.load();
    (await getComputeDevice()).device.destroy();
    await new Promise((r) => setTimeout(r, 100));
    await expect(step.submit([batchOf(1, 3, 16, 3)], 1e-3, 1)).rejects.toThrow(GpuRuntimeError);
    await expect(step.submit([batchOf(1, 3, 16, 3)], 1e-3, 1)).rejects.toThrow(/^the GPU device was lost .*; the run stops here \(its last checkpoint is kept\)$/);
    gpt.dispose();
  });
});
