import { describe, it, expect, beforeAll } from 'vitest';
import { tf, useBackend } from '@patchflow/tensor';
import { AdamW, learningRate, DEFAULT_CONFIG } from '../src/index.js';

describe('learning-rate schedule', () => {
  const o = { ...DEFAULT_CONFIG.optim, lr: 1, minLrRatio: 0.1, warmupSteps: 4 };
  it('warms up linearly, then follows a cosine down to minLr', () => {
    expect(learningRate(o, 0, 104)).toBeCloseTo(1 / 5);
    expect(learningRate(o, 3, 104)).toBeCloseTo(4 / 5);
    expect(learningRate(o, 4, 104)).toBeCloseTo(1);
    expect(learningRate(o, 54, 104)).toBeCloseTo(0.1 + 0.9 * 0.5); // half-way through the cosine
    expect(learningRate(o, 104, 104)).toBeCloseTo(0.1);
  });
});

describe('AdamW', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });
  it('matches a plain-JS AdamW with decoupled decay and global-norm clipping', () => {
    const cfg = { ...DEFAULT_CONFIG.optim, lr: 0.1, weightDecay: 0.5, gradClip: 1.0, beta1: 0.8, beta2: 0.9, eps: 1e-8 };
    const w0 = [0.5, -1.5, 2.0];
    const b0 = [0.25];
    const wv = tf.variable(tf.tensor1d(w0));
    const bv = tf.variable(tf.tensor1d(b0));
    const opt = new AdamW(cfg, [
      { name: 'w', variable: wv, decay: true },
      { name: 'b', variable: bv, decay: false },
    ]);
    const gradsSeq = [
      { w: [3, 0, -4], b: [0] }, // norm 5 -> clipped to 1
      { w: [0.1, 0.2, -0.1], b: [0.3] }, // norm < 1 -> unclipped
      { w: [-0.2, 0.5, 0.05], b: [-0.1] },
    ];
    // reference
    const p = { w: [...w0], b: [...b0] };
    const m = { w: [0, 0, 0], b: [0] };
    const v = { w: [0, 0, 0], b: [0] };
    gradsSeq.forEach((g, i) => {
      const t = i + 1;
      const lr = 0.1 / t;
      const norm = Math.sqrt([...g.w, ...g.b].reduce((a, x) => a + x * x, 0));
      const scale = Math.min(1, 1 / (norm + 1e-6));
      for (const k of ['w', 'b'] as const) {
        for (let j = 0; j < p[k].length; j++) {
          const gj = g[k][j]! * scale;
          m[k][j] = 0.8 * m[k][j]! + 0.2 * gj;
          v[k][j] = 0.9 * v[k][j]! + 0.1 * gj * gj;
          const mh = m[k][j]! / (1 - 0.8 ** t);
          const vh = v[k][j]! / (1 - 0.9 ** t);
          const decayed = k === 'w' ? p[k][j]! * (1 - lr * 0.5) : p[k][j]!;
          p[k][j] = decayed - (lr * mh) / (Math.sqrt(vh) + 1e-8);
        }
      }
      const n = opt.step({ w: tf.tensor1d(g.w), b: tf.tensor1d(g.b) }, lr);
      expect(n.dataSync()[0]).toBeCloseTo(norm, 5);
      n.dispose();
    });
    const gotW = Array.from(wv.dataSync());
    const gotB = Array.from(bv.dataSync());
    gotW.forEach((x, j) => expect(x).toBeCloseTo(p.w[j]!, 5));
    gotB.forEach((x, j) => expect(x).toBeCloseTo(p.b[j]!, 5));
  });
});
