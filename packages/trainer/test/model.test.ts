import { describe, it, expect, beforeAll } from 'vitest';
import { tf, useBackend, crossEntropy, setFusedKernelsEnabled } from '@patchflow/tensor';
import { GPT, paramSpecs, forwardFlopsPerPosition, finalizeModelConfig, DEFAULT_CONFIG, type ModelConfig } from '../src/index.js';

const tiny = (over: Partial<ModelConfig> = {}): ModelConfig =>
  finalizeModelConfig({ ...DEFAULT_CONFIG.model, nLayer: 2, nHead: 2, dModel: 8, seqLen: 6, tiedEmbeddings: false, ...over }, 11);

/** Deterministic pseudo-random values (not the code under test's RNG). */
function lcg(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
}

function randomize(model: GPT, seed: number): void {
  const r = lcg(seed);
  for (const s of model.specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const base = s.init === 'ones' ? 1 : 0;
    const data = Float32Array.from({ length: n }, () => base + 0.4 * r());
    const t = tf.tensor(data, s.shape);
    model.p(s.name).assign(t);
    t.dispose();
  }
}

function lossOf(model: GPT, ids: Int32Array, labels: Int32Array, b: number, t: number): tf.Scalar {
  const logits = model.forward(tf.tensor2d(ids, [b, t], 'int32'));
  return tf.mean(crossEntropy(logits, tf.tensor2d(labels, [b * t, 1], 'int32'))) as tf.Scalar;
}

describe.each([
  ['cpu', true],
  ['cpu', false],
  ['tfjs-cpu', false],
] as const)('GPT on %s (fused kernels: %s)', (backend, fused) => {
  beforeAll(async () => {
    await useBackend(backend);
    setFusedKernelsEnabled(fused);
  });

  for (const positions of ['learned', 'rotary'] as const) {
    it(`gradients match finite differences (${positions} positions)`, () => {
      const cfg = tiny({ positions });
      const model = new GPT(cfg, 3);
      randomize(model, 11);
      const b = 2;
      const t = 5;
      const r = lcg(5);
      const ids = Int32Array.from({ length: b * t }, () => Math.floor(((r() + 1) / 2) * 11));
      const labels = Int32Array.from({ length: b * t }, () => Math.floor(((r() + 1) / 2) * 11));
      const vars = model.specs.map((s) => model.p(s.name));
      const { value, grads: raw } = tf.variableGrads(() => lossOf(model, ids, labels, b, t), vars);
      const grads = model.gradsByParam(raw);
      value.dispose();
      const eps = 1e-2;
      for (const s of model.specs) {
        const v = model.p(s.name);
        const orig = v.dataSync().slice() as Float32Array;
        const g = grads[s.name]!.dataSync() as Float32Array;
        // directional derivative along a random direction: (L(w+eu) - L(w-eu)) / 2e  vs  g . u
        const u = Float32Array.from({ length: orig.length }, () => r());
        let gu = 0;
        for (let i = 0; i < u.length; i++) gu += g[i]! * u[i]!;
        const at = (sign: number) => {
          const w = tf.tensor(orig.map((x, i) => x + sign * eps * u[i]!), s.shape);
          v.assign(w);
          w.dispose();
          const l = tf.tidy(() => lossOf(model, ids, labels, b, t));
          const out = l.dataSync()[0]!;
          l.dispose();
          return out;
        };
        const fd = (at(1) - at(-1)) / (2 * eps);
        const w = tf.tensor(orig, s.shape);
        v.assign(w);
        w.dispose();
        expect(Math.abs(fd - gu), `${s.name}: fd ${fd} vs grad ${gu}`).toBeLessThan(2e-3 + 2e-2 * Math.abs(gu));
      }
      for (const g of Object.values(grads)) g.dispose();
      model.dispose();
    });
  }
});

describe('GPT accounting', () => {
  it('parameter count matches a hand count', () => {
    const c = tiny({ tiedEmbeddings: true });
    // emb 11*8 + pos 6*8 + per layer (2*8 + 8*24+24 + 8*8+8 + 2*8 + 8*32+32 + 32*8+8) + ln_f 16
    const perLayer = 16 + (192 + 24) + (64 + 8) + 16 + (256 + 32) + (256 + 8);
    const expected = 88 + 48 + 2 * perLayer + 16;
    expect(new GPT(c, 1).parameterCount()).toBe(expected);
    expect(paramSpecs({ ...c, tiedEmbeddings: false }).some((s) => s.name === 'lm_head.weight')).toBe(true);
  });

  it('forward FLOPs per position count every matmul multiply-add twice', () => {
    const c = tiny();
    const d = 8;
    const perLayer = 2 * (d * 3 * d) + 2 * (d * d) + 2 * (d * 32) * 2 + 2 * 2 * 6 * d;
    expect(forwardFlopsPerPosition(c)).toBe(2 * perLayer + 2 * d * 11);
  });

  it('rejects a checkpoint of another shape', async () => {
    const a = new GPT(tiny(), 1);
    const b = new GPT(tiny({ dModel: 12, nHead: 2 }), 1);
    const w = await a.exportWeights();
    expect(() => b.loadWeights(w)).toThrow(/shape/);
  });
});
