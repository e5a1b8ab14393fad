import { describe, it, expect } from 'vitest';
import { layerNormForward, layerNormBackward, crossEntropy, lossSum, createBuffer } from '../src/compiled/index.js';
import { compiledGpu, randn, randInt, expectClose, upload, readF32 } from './compiled-helpers.js';

const gpu = await compiledGpu();

/** float64 LayerNorm (ops.ts: biased variance, rsqrt(var + eps)). */
function lnRef(x: ArrayLike<number>, g: ArrayLike<number>, b: ArrayLike<number>, R: number, C: number, eps = 1e-5) {
  const y = new Float64Array(R * C);
  const mean = new Float64Array(R);
  const rstd = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += x[r * C + c]!;
    const mu = s / C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c]! - mu) ** 2;
    const rs = 1 / Math.sqrt(v / C + eps);
    mean[r] = mu;
    rstd[r] = rs;
    for (let c = 0; c < C; c++) y[r * C + c] = (x[r * C + c]! - mu) * rs * g[c]! + b[c]!;
  }
  return { y, mean, rstd };
}

/** Central finite difference of f at x[i] (float64). */
function fd(f: (x: Float64Array) => number, x: Float64Array, i: number, h = 1e-6): number {
  const x0 = x[i]!;
  x[i] = x0 + h;
  const a = f(x);
  x[i] = x0 - h;
  const b = f(x);
  x[i] = x0;
  return (a - b) / (2 * h);
}

describe.skipIf(!gpu)('compiled layerNorm', () => {
  it('forward matches float64 (rows 37, cols 70; cols 300 > one pass of the workgroup)', async () => {
    const { device, runner } = gpu!;
    for (const [R, C] of [
      [37, 70],
      [5, 300],
    ] as const) {
      const x = randn(R * C, 1, 2).map((v, i) => v + (i % 7) * 0.3);
      const g = randn(C, 2);
      const b = randn(C, 3);
      const spec = layerNormForward({ rows: R, cols: C });
      const bufs = { x: upload(device, x), gamma: upload(device, g), beta: upload(device, b), y: createBuffer(device, R * C * 4), mean: createBuffer(device, R * 4), rstd: createBuffer(device, R * 4) };
      await runner.run([spec, bufs]);
      const want = lnRef(x, g, b, R, C);
      // f32 two-pass moments over ≤ 300 values of O(1): relative error ~1e-6
      expectClose(await readF32(device, bufs.y, R * C), want.y, 'y', 2e-5, 2e-5);
      expectClose(await readF32(device, bufs.mean, R), want.mean, 'mean', 1e-5, 1e-5);
      expectClose(await readF32(device, bufs.rstd, R), want.rstd, 'rstd', 1e-5, 1e-5);
    }
  });

  it('backward matches finite differences of the float64 forward (dx, dγ, dβ; dx accumulated onto a residual gradient)', async () => {
    const { device, runner } = gpu!;
    const R = 37;
    const C = 70;
    const x = randn(R * C, 4);
    const g = randn(C, 5);
    const b = randn(C, 6);
    const dy = randn(R * C, 7);
    const dres = randn(R * C, 8);
    const ref = lnRef(x, g, b, R, C);
    const bw = layerNormBackward({ rows: R, cols: C, accumulate: true, rowsPerChunk: 8 });
    const bufs = {
      dy: upload(device, dy),
      x: upload(device, x),
      gamma: upload(device, g),
      mean: upload(device, Float32Array.from(ref.mean)),
      rstd: upload(device, Float32Array.from(ref.rstd)),
      dx: upload(device, dres),
      partial: createBuffer(device, bw.scratchFloats * 4),
      dgamma: createBuffer(device, C * 4),
      dbeta: createBuffer(device, C * 4),
    };
    await runner.run([bw.dx, bufs], [bw.partial, bufs], [bw.reduce, bufs]);
    const dx = await readF32(device, bufs.dx, R * C);
    const dg = await readF32(device, bufs.dgamma, C);
    const db = await readF32(device, bufs.dbeta, C);
    // L = Σ dy ⊙ LN(x): its gradient is what the kernels compute
    const loss = (xx: ArrayLike<number>, gg: ArrayLike<number>, bb: ArrayLike<number>) => lnRef(xx, gg, bb, R, C).y.reduce((s, v, i) => s + v * dy[i]!, 0);
    const x64 = Float64Array.from(x);
    const g64 = Float64Array.from(g);
    const b64 = Float64Array.from(b);
    // every 13th element of dx (FD costs a forward each), all of dγ and dβ
    const idx = Array.from({ length: Math.ceil((R * C) / 13) }, (_, i) => i * 13);
    expectClose(idx.map((i) => dx[i]!), idx.map((i) => dres[i]! + fd((v) => loss(v, g64, b64), x64, i)), 'dx', 1e-3, 1e-3);
    expectClose(dg, Array.from({ length: C }, (_, c) => fd((v) => loss(x64, v, b64), g64, c)), 'dgamma', 1e-3, 1e-4);
    expectClose(db, Array.from({ length: C }, (_, c) => fd((v) => loss(x64, g64, v), b64, c)), 'dbeta', 1e-3, 1e-4);
  });
});

/** float64 loss per row (ops.ts crossEntropy + the label-smoothing plugin's uniform term). */
function ceRef(logits: ArrayLike<number>, labels: ArrayLike<number>, R: number, V: number, K: number, eps: number) {
  const loss = new Float64Array(R);
  const grad = new Float64Array(R * V);
  for (let r = 0; r < R; r++) {
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, logits[r * V + v]!);
    let s = 0;
    let sl = 0;
    for (let v = 0; v < V; v++) {
      s += Math.exp(logits[r * V + v]! - m);
      sl += logits[r * V + v]!;
    }
    const lse = m + Math.log(s);
    let h = 0;
    for (let k = 0; k < K; k++) h += lse - logits[r * V + labels[r * K + k]!]!;
    loss[r] = (1 - eps) * (h / K) + eps * (lse - sl / V);
    for (let v = 0; v < V; v++) {
      let cnt = 0;
      for (let k = 0; k < K; k++) cnt += labels[r * K + k] === v ? 1 : 0;
      grad[r * V + v] = Math.exp(logits[r * V + v]! - lse) - ((1 - eps) * cnt) / K - eps / V;
    }
  }
  return { loss, grad };
}

describe.skipIf(!gpu)('compiled crossEntropy', () => {
  for (const [R, V, K, eps] of [
    [37, 70, 1, 0],
    [9, 515, 3, 0.1],
  ] as const) {
    it(`rows ${R}, vocab ${V}, K ${K}, smoothing ${eps}: loss, in-place gradient (vs finite differences), loss sum`, async () => {
      const { device, runner } = gpu!;
      const logits = randn(R * V, 21, 3);
      // repeated labels within a row exercise the one-hot counts
      const labels = randInt(R * K, 22, V);
      if (K > 1) labels[1] = labels[0]!;
      const ce = crossEntropy({ rows: R, vocab: V, k: K, smoothing: eps });
      const sum = lossSum({ rows: R, scale: 1 / R });
      const bufs = { logits: upload(device, logits), labels: upload(device, labels), loss: createBuffer(device, R * 4), out: createBuffer(device, 16) };
      await runner.run([ce, bufs], [sum, bufs]);
      const want = ceRef(logits, labels, R, V, K, eps);
      expectClose(await readF32(device, bufs.loss, R), want.loss, 'loss', 1e-5, 1e-5);
      const mean = want.loss.reduce((a, b) => a + b, 0) / R;
      expectClose(await readF32(device, bufs.out, 1), [mean], 'mean loss', 1e-5, 1e-5);
      // gradient of mean loss, checked against finite differences on every 7th logit
      const grad = await readF32(device, bufs.logits, R * V);
      const l64 = Float64Array.from(logits);
      const f = (l: Float64Array) => ceRef(l, labels, R, V, K, eps).loss.reduce((a, b) => a + b, 0) / R;
      const idx = Array.from({ length: Math.ceil((R * V) / 7) }, (_, i) => i * 7);
      expectClose(idx.map((i) => grad[i]!), idx.map((i) => fd(f, l64, i)), 'dlogits vs FD', 1e-6, 1e-3);
      expectClose(grad, want.grad.map((g) => g / R), 'dlogits', 1e-7, 1e-4);
    });
  }

  it('rejects smoothing outside [0, 1)', () => {
    expect(() => crossEntropy({ rows: 1, vocab: 2, smoothing: 1 })).toThrow(/smoothing/);
  });
});
