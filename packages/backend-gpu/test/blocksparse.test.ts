/**
 * The webgpu kernels PfBlockSparseMatMul / PfBlockSparseMatMulGrad (src/kernels.ts), through
 * @patchflow/tensor's blockSparseMatMul op and tf.grads, against a float64 reference in plain JS.
 * Skips when this machine has no WebGPU adapter, unless CI is set: then it fails.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { blockSparseMatMul, hasFusedKernel, tf, useBackend } from '@patchflow/tensor';
import { webgpuBackend } from '../src/index.js';
import { gradWTiles, matMulTiles } from '../src/kernels.js';
import { expectClose, gpuGate, IN_CI, randn } from './helpers.js';
import { blockMask, blockSparseRef } from '@patchflow/test-fixtures';
/** A [kb, nb] 0/1 mask with round(density · blocks) kept blocks, at seeded positions. */
const makeMask = (kb: number, nb: number, density: number, seed: number) => blockMask(kb, nb, density, randn(kb * nb, seed));
/** float64 references (test-fixtures: independent of ops.ts and the kernels). */
const reference = blockSparseRef;


const gate = await gpuGate();



/** Elementwise closeness (fp32 tolerances) plus the relative error of the whole result. */
function expectNear(got: ArrayLike<number>, want: Float64Array, what: string): void {
  expectClose(got, want, what, 1e-4, 1e-4);
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i]! - want[i]!) ** 2;
    den += want[i]! ** 2;
  }
  if (den === 0) {
    expect(Array.from(got).every((v) => v === 0), `${what}: the reference is all zeros, so must the result be`).toBe(true);
  } else {
    expect(Math.sqrt(num / den), `${what}: relative error`).toBeLessThan(1e-5);
  }
}

/**
 * Runs the op and its gradients (of sum(y ⊙ r), so dy = r) on the current backend and checks them
 * against the reference. w's masked blocks hold NaN (`poison`): a kernel that reads only the kept
 * blocks never sees them, while the composite x @ (w⊙M) would turn them into NaN outputs.
 */
async function check(m: number, k: number, n: number, b: number, density: number, seed: number, poison = true) {
  const what = `[${m},${k}]@[${k},${n}] b=${b} density=${density}`;
  const kb = k / b;
  const nb = n / b;
  const xv = randn(m * k, seed);
  const wv = randn(k * n, seed + 1);
  const rv = randn(m * n, seed + 2);
  const maskv = makeMask(kb, nb, density, seed + 3);
  const wPoisoned = Float32Array.from(wv, (v, i) => (poison && !maskv[Math.floor(i / n / b) * nb + Math.floor((i % n) / b)] ? NaN : v));
  const ref = reference(xv, wv, maskv, rv, m, k, n, b);

  const mask = tf.tensor2d(maskv, [kb, nb], 'int32');
  const x = tf.tensor2d(xv, [m, k]);
  const w = tf.tensor2d(wPoisoned, [k, n]);
  const r = tf.tensor2d(rv, [m, n]);
  const y = blockSparseMatMul(x, w, mask, b);
  const [dx, dw] = tf.grads((xi: tf.Tensor, wi: tf.Tensor) => tf.sum(tf.mul(blockSparseMatMul(xi as tf.Tensor2D, wi as tf.Tensor2D, mask, b), r)))([x, w]);
  expect(y.shape).toEqual([m, n]);
  expect(dx!.shape).toEqual([m, k]);
  expect(dw!.shape).toEqual([k, n]);
  const [yv, dxv, dwv] = await Promise.all([y.data(), dx!.data(), dw!.data()]);
  tf.dispose([mask, x, w, r, y, dx!, dw!]);

  expectNear(yv as Float32Array, ref.y, `${what}: y`);
  expectNear(dxv as Float32Array, ref.dx, `${what}: dx`);
  expectNear(dwv as Float32Array, ref.dw, `${what}: dw`);
  // dw is exactly zero outside the kept blocks (not merely small).
  for (let i = 0; i < k * n; i++) {
    if (!maskv[Math.floor(i / n / b) * nb + Math.floor((i % n) / b)] && dwv[i] !== 0) {
      expect.fail(`${what}: dw[${Math.floor(i / n)},${i % n}] = ${dwv[i]} in a masked block`);
    }
  }
}

describe('WebGPU adapter', () => {
  it('is available (required when CI is set)', (ctx) => {
    if (gate.ok) return;
    if (IN_CI) expect.fail(`CI is set but the webgpu backend is unavailable, so its tests cannot run: ${gate.reason}`);
    ctx.skip(gate.reason);
  });
});

describe('tile shapes', () => {
  it('divide the block, fit in 16 KiB of workgroup memory and 256 invocations', () => {
    for (const b of [1, 2, 3, 4, 5, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256]) {
      const t = matMulTiles(b);
      expect(b % t.tileN, `b=${b} tileN`).toBe(0);
      expect(b % t.tileK, `b=${b} tileK`).toBe(0);
      expect(t.tileN, `b=${b}`).toBe(t.threadsN * t.perN);
      expect(t.threadsN * t.threadsM, `b=${b}`).toBeLessThanOrEqual(256);
      expect(4 * (t.tileM * t.tileK + t.tileK * t.tileN), `b=${b}`).toBeLessThanOrEqual(16384);
      const g = gradWTiles(b);
      expect(b % g.tile, `b=${b} dw tile`).toBe(0);
      expect(g.tile, `b=${b}`).toBe(g.threads * g.per);
      expect(g.threads ** 2, `b=${b}`).toBeLessThanOrEqual(256);
      expect(4 * 2 * g.chunkM * g.tile, `b=${b}`).toBeLessThanOrEqual(16384);
    }
  });
});

describe.skipIf(!gate.ok)('blockSparseMatMul on webgpu (fused kernels)', () => {
  beforeAll(async () => {
    await useBackend('webgpu');
    tf.env().set('WEBGPU_CPU_FORWARD', false);
    expect(tf.getBackend()).toBe('webgpu');
  });

  it('the kernels are registered: hasFusedKernel and capabilities say so', () => {
    expect(hasFusedKernel('PfBlockSparseMatMul')).toBe(true);
    expect(webgpuBackend.capabilities().fusedOps).toContain('PfBlockSparseMatMul');
  });

  // M not a multiple of any row tile (37, 130, 5); non-square w; one row of blocks (K = b).
  const shapes: [number, number, number][] = [
    [37, 64, 96],
    [130, 128, 64],
    [5, 32, 128],
  ];
  for (const b of [4, 16, 32]) {
    for (const [m, k, n] of shapes) {
      it(`[${m},${k}] @ [${k},${n}], b=${b}: forward and gradients at densities 0, 0.25, 0.5, 1`, async () => {
        for (const [i, density] of [0, 0.25, 0.5, 1].entries()) await check(m, k, n, b, density, 100 * b + 10 * i + m);
      });
    }
  }

  it('with a bias: added to every row, its gradient the column sum of dy (vs plain JS)', async () => {
    for (const [m, k, n, b] of [[37, 64, 96, 16], [5, 32, 128, 4]] as const) {
      const xv = randn(m * k, 501 + m);
      const wv = randn(k * n, 502 + m);
      const rv = randn(m * n, 503 + m);
      const bv = randn(n, 504 + m);
      const maskv = makeMask(k / b, n / b, 0.5, 505 + m);
      const ref = reference(xv, wv, maskv, rv, m, k, n, b);
      const ts = tf.tidy(() => {
        const x = tf.tensor2d(xv, [m, k]);
        const w = tf.tensor2d(wv, [k, n]);
        const bias = tf.tensor1d(bv);
        const mask = tf.tensor2d(maskv, [k / b, n / b], 'int32');
        const r = tf.tensor2d(rv, [m, n]);
        const f = (xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) => blockSparseMatMul(xi as tf.Tensor2D, wi as tf.Tensor2D, mask, b, bi);
        const grads = tf.grads((xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) => tf.sum(tf.mul(f(xi, wi, bi), r)))([x, w, bias]);
        return [f(x, w, bias), ...grads].map((t) => tf.keep(t));
      });
      const [y, dx, dw, db] = await Promise.all(ts.map((t) => t.data()));
      ts.forEach((t) => t.dispose());
      const dbRef = new Float64Array(n);
      for (let i = 0; i < m * n; i++) dbRef[i % n] += rv[i]!;
      expectNear(y!, Float64Array.from(ref.y, (v, i) => v + bv[i % n]!), 'y + bias');
      expectNear(dx!, ref.dx, 'dx');
      expectNear(dw!, ref.dw, 'dw');
      expectNear(db!, dbRef, 'dbias');
    }
  });

  it('other block sizes: 1, 8, 12, 64, 128 (several column tiles per block)', async () => {
    await check(19, 8, 8, 1, 0.5, 7);
    await check(70, 64, 32, 8, 0.5, 8);
    await check(33, 48, 36, 12, 0.5, 9);
    await check(67, 128, 192, 64, 0.5, 10);
    await check(9, 256, 128, 128, 0.5, 11);
  });

  it('an all-kept mask agrees with a dense tf.matMul and its gradients (no NaN poisoning)', async () => {
    const [m, k, n, b] = [50, 64, 64, 16];
    const x = tf.tensor2d(randn(m * k, 1), [m, k]);
    const w = tf.tensor2d(randn(k * n, 2), [k, n]);
    const r = tf.tensor2d(randn(m * n, 3), [m, n]);
    const mask = tf.ones([k / b, n / b], 'int32') as tf.Tensor2D;
    const f = (sparse: boolean) => (xi: tf.Tensor, wi: tf.Tensor) =>
      tf.sum(tf.mul(sparse ? blockSparseMatMul(xi as tf.Tensor2D, wi as tf.Tensor2D, mask, b) : tf.matMul(xi, wi), r));
    const got = tf.grads(f(true))([x, w]);
    const want = tf.grads(f(false))([x, w]);
    for (let i = 0; i < 2; i++) expectClose(await got[i]!.data(), await want[i]!.data(), `grad ${i}`, 1e-4, 1e-4);
    expectClose(await blockSparseMatMul(x, w, mask, b).data(), await tf.matMul(x, w).data(), 'y', 1e-4, 1e-4);
    tf.dispose([x, w, r, mask, ...got, ...want]);
  });

  it('a float mask (any non-zero = kept) works through the op', async () => {
    const [m, k, n, b] = [6, 8, 8, 4];
    const maskv = Int32Array.from([1, 0, 0, 1]);
    const xv = randn(m * k, 21);
    const wv = randn(k * n, 22);
    const ref = reference(xv, wv, maskv, new Float32Array(m * n), m, k, n, b);
    const y = blockSparseMatMul(tf.tensor2d(xv, [m, k]), tf.tensor2d(wv, [k, n]), tf.tensor2d([2.5, 0, 0, -1], [2, 2]), b);
    expectNear(await y.data(), ref.y, 'float mask: y');
  });

  it('the kernel validates shapes when called directly', () => {
    const x = tf.zeros([4, 8]);
    const w = tf.zeros([8, 8]);
    expect(() => tf.engine().runKernel('PfBlockSparseMatMul', { x, w, blockMask: tf.zeros([2, 3], 'int32') }, { blockSize: 4 })).toThrow(
      /blockMask is \[2,3\], expected \[2,2\]/,
    );
    expect(() => tf.engine().runKernel('PfBlockSparseMatMul', { x, w, blockMask: tf.zeros([2, 2], 'int32') }, { blockSize: 3 })).toThrow(
      /block size 3 does not divide/,
    );
  });

  it('no rows: y is [0, N], dx [0, K], dw zeros', async () => {
    const x = tf.zeros([0, 8]);
    const w = tf.ones([8, 4]);
    const mask = tf.ones([2, 1], 'int32');
    const y = tf.engine().runKernel('PfBlockSparseMatMul', { x, w, blockMask: mask }, { blockSize: 4 }) as tf.Tensor;
    expect(y.shape).toEqual([0, 4]);
    const [dx, dw] = tf.engine().runKernel('PfBlockSparseMatMulGrad', { x, w, blockMask: mask, dy: tf.zeros([0, 4]) }, { blockSize: 4 }) as tf.Tensor[];
    expect(dx!.shape).toEqual([0, 8]);
    expect(Array.from(await dw!.data())).toEqual(new Array(32).fill(0));
  });
});
