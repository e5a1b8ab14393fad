/**
 * Fused ops (native kernels on the `cpu` backend) against: the composites of ops.ts run on stock
 * tfjs-cpu (forward), float64 central finite differences of independent plain-JS references
 * (gradients), and tf.grad of the composites (gradients).
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { tf, on, rand, expectClose, maxAbs, numericGrad, gelu64, layerNorm64, attention64, crossEntropy64 } from './helpers.js';
import { gelu, layerNorm, causalAttention, crossEntropy, adamwUpdate, hasFusedKernel, setFusedKernelsEnabled, nativeInfo, cpuBackend } from '../src/index.js';

beforeAll(async () => {
  await on('cpu', () => undefined);
  expect(nativeInfo().loaded, nativeInfo().reason).toBe(true);
  for (const op of ['PfGelu', 'PfLayerNorm', 'PfCausalAttention', 'PfCrossEntropy', 'PfBlockSparseMatMul'] as const) expect(hasFusedKernel(op)).toBe(true);
  expect(cpuBackend.capabilities().fusedOps).toEqual(['PfGelu', 'PfLayerNorm', 'PfCausalAttention', 'PfCrossEntropy', 'PfBlockSparseMatMul']);
});

/** Gradients of sum(w * f(inputs)) by tf.grads on the current backend. */
function gradsOf(f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], w: Float32Array): Float32Array[] {
  return tf.tidy(() => {
    const g = tf.grads((...xs: tf.Tensor[]) => {
      const y = f(...xs);
      return tf.sum(tf.mul(y, tf.tensor(w, y.shape)));
    });
    return g(inputs).map((t) => t.dataSync() as Float32Array);
  });
}

/** Composite forward + gradients on stock tfjs-cpu (the independent tfjs reference). */
async function compositeOnStock(f: (...xs: tf.Tensor[]) => tf.Tensor, make: () => tf.Tensor[], w: Float32Array) {
  return on('tfjs-cpu', () => {
    const y = tf.tidy(() => f(...make()).dataSync() as Float32Array);
    return { y, g: gradsOf(f, make(), w) };
  });
}

async function fusedOnCpu(f: (...xs: tf.Tensor[]) => tf.Tensor, make: () => tf.Tensor[], w: Float32Array) {
  return on('cpu', () => {
    const y = tf.tidy(() => f(...make()).dataSync() as Float32Array);
    return { y, g: gradsOf(f, make(), w) };
  });
}

describe('PfGelu', { timeout: 60_000 }, () => {
  const x = rand(4 * 37, 1, 4);
  const w = rand(x.length, 2);
  it('forward matches the composite; gradient matches finite differences and the composite', async () => {
    const make = () => [tf.tensor2d(x, [4, 37])];
    const ref = await compositeOnStock((t) => gelu(t), make, w);
    const got = await fusedOnCpu((t) => gelu(t), make, w);
    expectClose(got.y, ref.y, 1e-5, 1e-5, 'forward');
    expectClose(got.y, gelu64(x), 1e-5, 1e-5, 'forward vs float64');
    const fd = numericGrad((xx) => gelu64(xx), Float64Array.from(x), w);
    expectClose(got.g[0]!, fd, 1e-4, 1e-4, 'grad vs finite differences');
    expectClose(got.g[0]!, ref.g[0]!, 1e-4, 1e-4, 'grad vs composite');
  });
  it('large input (threaded path) and extreme values', async () => {
    const big = rand(300_000, 3, 12);
    big[0] = 100; big[1] = -100; big[2] = 0;
    const got = await on('cpu', () => tf.tidy(() => gelu(tf.tensor1d(big)).dataSync()));
    expectClose(got, gelu64(big), 2e-5, 2e-5, 'gelu large');
  });
});

describe('PfLayerNorm', { timeout: 60_000 }, () => {
  const [R, C] = [6, 13];
  const x = rand(R * C, 5, 2);
  for (let c = 0; c < C; c++) x[c] = x[c]! + 5; // a row with a large mean
  const g = rand(C, 6, 1.5);
  const b = rand(C, 7);
  const w = rand(R * C, 8);
  const make = () => [tf.tensor2d(x, [R, C]), tf.tensor1d(g), tf.tensor1d(b)];
  const f = (xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => layerNorm(xx, gg, bb);
  it('forward matches the composite and float64', async () => {
    const ref = await compositeOnStock(f as never, make, w);
    const got = await fusedOnCpu(f as never, make, w);
    expectClose(got.y, ref.y, 1e-4, 1e-4, 'forward vs composite');
    expectClose(got.y, layerNorm64(x, g, b, C), 1e-5, 1e-4, 'forward vs float64');
  });
  it('gradients (x, gamma, beta) match finite differences and the composite', async () => {
    const ref = await compositeOnStock(f as never, make, w);
    const got = await fusedOnCpu(f as never, make, w);
    const x64 = Float64Array.from(x);
    const fdx = numericGrad((xx) => layerNorm64(xx, g, b, C), x64, w);
    const fdg = numericGrad((gg) => layerNorm64(x, gg, b, C), Float64Array.from(g), w);
    const fdb = numericGrad((bb) => layerNorm64(x, g, bb, C), Float64Array.from(b), w);
    expectClose(got.g[0]!, fdx, 2e-4 * maxAbs(fdx), 1e-3, 'dx vs FD');
    expectClose(got.g[1]!, fdg, 2e-4 * maxAbs(fdg), 1e-3, 'dgamma vs FD');
    expectClose(got.g[2]!, fdb, 2e-4 * maxAbs(fdb), 1e-3, 'dbeta vs FD');
    for (let i = 0; i < 3; i++) expectClose(got.g[i]!, ref.g[i]!, 2e-4 * maxAbs(ref.g[i]!), 1e-3, `grad ${i} vs composite`);
  });
  it('rank-3 input, many rows (threaded path)', async () => {
    const [B, T, D] = [4, 300, 64];
    const xx = rand(B * T * D, 9, 3);
    const gg = rand(D, 10);
    const bb = rand(D, 11);
    const ww = rand(B * T * D, 12);
    const mk = () => [tf.tensor3d(xx, [B, T, D]), tf.tensor1d(gg), tf.tensor1d(bb)];
    const ref = await compositeOnStock(f as never, mk, ww);
    const got = await fusedOnCpu(f as never, mk, ww);
    expectClose(got.y, ref.y, 1e-4, 1e-4, 'forward');
    for (let i = 0; i < 3; i++) expectClose(got.g[i]!, ref.g[i]!, 1e-4 * maxAbs(ref.g[i]!), 1e-3, `grad ${i}`);
  });
});

describe('PfCausalAttention', { timeout: 60_000 }, () => {
  const cases: [number, number, number, number][] = [
    [1, 2, 5, 3],
    [2, 1, 7, 4],
  ];
  for (const [B, H, T, D] of cases)
    it(`[${B},${H},${T},${D}]: forward vs composite and float64; grads vs finite differences and composite`, async () => {
      const n = B * H * T * D;
      const q = rand(n, 21, 1.5);
      const k = rand(n, 22, 1.5);
      const v = rand(n, 23);
      const w = rand(n, 24);
      const scale = 1 / Math.sqrt(D);
      const make = () => [tf.tensor4d(q, [B, H, T, D]), tf.tensor4d(k, [B, H, T, D]), tf.tensor4d(v, [B, H, T, D])];
      const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => causalAttention(a as tf.Tensor4D, b as tf.Tensor4D, c as tf.Tensor4D);
      const ref = await compositeOnStock(f as never, make, w);
      const got = await fusedOnCpu(f as never, make, w);
      expectClose(got.y, ref.y, 1e-5, 1e-4, 'forward vs composite');
      expectClose(got.y, attention64(q, k, v, B * H, T, D, scale), 1e-5, 1e-4, 'forward vs float64');
      const fd = [
        numericGrad((qq) => attention64(qq, k, v, B * H, T, D, scale), Float64Array.from(q), w),
        numericGrad((kk) => attention64(q, kk, v, B * H, T, D, scale), Float64Array.from(k), w),
        numericGrad((vv) => attention64(q, k, vv, B * H, T, D, scale), Float64Array.from(v), w),
      ];
      for (let i = 0; i < 3; i++) {
        expectClose(got.g[i]!, fd[i]!, 2e-4 * Math.max(1, maxAbs(fd[i]!)), 1e-3, `d${'qkv'[i]} vs FD`);
        expectClose(got.g[i]!, ref.g[i]!, 2e-4 * Math.max(1, maxAbs(ref.g[i]!)), 1e-3, `d${'qkv'[i]} vs composite`);
      }
    });

  it('T spanning several row blocks (T=150, D=16) and many heads (threaded): vs composite', async () => {
    const [B, H, T, D] = [2, 3, 150, 16];
    const n = B * H * T * D;
    const q = rand(n, 31, 2);
    const k = rand(n, 32, 2);
    const v = rand(n, 33);
    const w = rand(n, 34);
    const make = () => [tf.tensor4d(q, [B, H, T, D]), tf.tensor4d(k, [B, H, T, D]), tf.tensor4d(v, [B, H, T, D])];
    const f = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => causalAttention(a as tf.Tensor4D, b as tf.Tensor4D, c as tf.Tensor4D);
    const ref = await compositeOnStock(f as never, make, w);
    const got = await fusedOnCpu(f as never, make, w);
    expectClose(got.y, ref.y, 2e-5, 1e-4, 'forward');
    for (let i = 0; i < 3; i++) expectClose(got.g[i]!, ref.g[i]!, 2e-4 * maxAbs(ref.g[i]!), 1e-3, `grad ${i}`);
  });
});

describe('PfCrossEntropy', { timeout: 60_000 }, () => {
  for (const K of [1, 3])
    it(`K=${K}: loss vs composite and float64; dlogits vs finite differences and composite`, async () => {
      const [N, V] = [5, 11];
      const logits = rand(N * V, 41 + K, 4);
      const labels = Int32Array.from({ length: N * K }, (_, i) => (i * 7 + 3) % V);
      const w = rand(N, 43);
      // labels are created outside the differentiated function (as the trainer does): ops.ts's
      // crossEntropy gradient closes over them rather than saving them.
      const run = (backend: 'cpu' | 'tfjs-cpu') =>
        on(backend, () => {
          const lb = tf.tensor2d(labels, [N, K], 'int32');
          const f = (lg: tf.Tensor) => crossEntropy(lg as tf.Tensor2D, lb);
          const y = tf.tidy(() => f(tf.tensor2d(logits, [N, V])).dataSync() as Float32Array);
          const g = gradsOf(f, [tf.tensor2d(logits, [N, V])], w);
          lb.dispose();
          return { y, g };
        });
      const ref = await run('tfjs-cpu');
      const got = await run('cpu');
      expectClose(got.y, ref.y, 1e-5, 1e-5, 'loss vs composite');
      expectClose(got.y, crossEntropy64(logits, labels, N, V, K), 1e-5, 1e-5, 'loss vs float64');
      const fd = numericGrad((lg) => crossEntropy64(lg, labels, N, V, K), Float64Array.from(logits), w);
      expectClose(got.g[0]!, fd, 1e-5, 1e-4, 'dlogits vs FD');
      expectClose(got.g[0]!, ref.g[0]!, 1e-5, 1e-4, 'dlogits vs composite');
    });

  it('large vocab rows (threaded), extreme logits stay finite', async () => {
    const [N, V, K] = [64, 1000, 2];
    const logits = rand(N * V, 51, 30);
    logits[0] = 80;
    const labels = Int32Array.from({ length: N * K }, (_, i) => (i * 131) % V);
    const got = await on('cpu', () => tf.tidy(() => crossEntropy(tf.tensor2d(logits, [N, V]), tf.tensor2d(labels, [N, K], 'int32')).dataSync()));
    expectClose(got, crossEntropy64(logits, labels, N, V, K), 1e-4, 1e-5, 'loss');
  });
});

describe('setFusedKernelsEnabled(false) runs the composites on the cpu backend', () => {
  it('layerNorm composite on cpu equals the fused kernel', async () => {
    const x = rand(8 * 16, 61);
    const g = rand(16, 62);
    const b = rand(16, 63);
    const run = () => tf.tidy(() => layerNorm(tf.tensor2d(x, [8, 16]), tf.tensor1d(g), tf.tensor1d(b)).dataSync());
    const fused = await on('cpu', run);
    setFusedKernelsEnabled(false);
    try {
      expect(hasFusedKernel('PfLayerNorm')).toBe(false);
      const comp = await on('cpu', run);
      expectClose(fused, comp, 1e-5, 1e-4, 'layerNorm');
    } finally {
      setFusedKernelsEnabled(true);
    }
  });
});

describe('adamwUpdate (PfAdamW)', () => {
  it('matches a plain-JS AdamW step and the composite', async () => {
    const n = 70001; // not a multiple of the vector width or the chunk size
    const [w, g, m, v] = [1, 2, 3, 4].map((s) => rand(n, s));
    for (let i = 0; i < n; i++) v[i] = Math.abs(v[i]!) * 1e-3;
    const o = { beta1: 0.9, beta2: 0.95, eps: 1e-8, decay: 1 - 2e-3 * 0.1, stepSize: 2e-3 / (1 - 0.9 ** 3), bc2: 1 - 0.95 ** 3 };
    const scale = 0.7;
    const ref = [new Float64Array(n), new Float64Array(n), new Float64Array(n)];
    for (let i = 0; i < n; i++) {
      const gi = g[i]! * scale;
      const mi = o.beta1 * m[i]! + (1 - o.beta1) * gi;
      const vi = o.beta2 * v[i]! + (1 - o.beta2) * gi * gi;
      ref[0]![i] = w[i]! * o.decay - (o.stepSize * mi) / (Math.sqrt(vi / o.bc2) + o.eps);
      ref[1]![i] = mi;
      ref[2]![i] = vi;
    }
    const go = () =>
      tf.tidy(() => adamwUpdate(tf.tensor1d(w!), tf.tensor1d(g!), tf.tensor1d(m!), tf.tensor1d(v!), tf.scalar(scale), o).map((t) => Float32Array.from(t.dataSync())));
    expect(tf.getKernel('PfAdamW', tf.getBackend())).toBeDefined();
    const fused = await on('cpu', go);
    setFusedKernelsEnabled(false);
    const composite = await on('cpu', go);
    setFusedKernelsEnabled(true);
    for (let k = 0; k < 3; k++) {
      expectClose(fused[k]!, ref[k]!, 1e-7, 1e-5, `fused output ${k}`);
      expectClose(composite[k]!, ref[k]!, 1e-7, 1e-5, `composite output ${k}`);
    }
  });
});
