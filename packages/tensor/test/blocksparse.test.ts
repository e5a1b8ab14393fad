/**
 * blockSparseMatMul on the `cpu` backend, i.e. the native kernels PfBlockSparseMatMul /
 * PfBlockSparseMatMulGrad (native/blocksparse.cc), against float64 plain-JS references of
 * y = x @ (w⊙M), dx = dy @ (w⊙M)^T, dw = (x^T @ dy) ⊙ M and against the composite. w's masked blocks
 * hold NaN in the kernel runs: a kernel that reads only the kept blocks never sees them.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { tf, on, rand, expectClose, maxAbs } from './helpers.js';
import { blockSparseMatMul, blockSparseMatMulComposite, hasFusedKernel, setFusedKernelsEnabled, nativeInfo, cpuBackend } from '../src/index.js';
import { blockMask, blockSparseRef } from '@patchflow/test-fixtures';
/** A [kb, nb] 0/1 mask with round(density · blocks) kept blocks, at seeded positions. */
const makeMask = (kb: number, nb: number, density: number, seed: number) => blockMask(kb, nb, density, rand(kb * nb, seed));
/** float64 references (test-fixtures: independent of ops.ts and the kernels). */
const reference = blockSparseRef;


beforeAll(async () => {
  await on('cpu', () => undefined);
  expect(nativeInfo().loaded, nativeInfo().reason).toBe(true);
});




/**
 * fp32 closeness for a sum of `red` products: elementwise within tol · max|want| (tol = 1e-5·√red),
 * and the relative error of the whole result below tol. An all-zero reference needs exact zeros.
 */
function expectNear(got: ArrayLike<number>, want: Float64Array, red: number, what: string): void {
  const tol = 1e-5 * Math.sqrt(Math.max(red, 1));
  const scale = maxAbs(want);
  if (scale === 0) {
    expect(Array.from(got).every((v) => v === 0), `${what}: the reference is all zeros, so must the result be`).toBe(true);
    return;
  }
  expectClose(got, want, tol * scale, tol, what);
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i]! - want[i]!) ** 2;
    den += want[i]! ** 2;
  }
  expect(Math.sqrt(num / den), `${what}: relative error`).toBeLessThan(tol);
}

/** y and the gradients of sum(y ⊙ r) by tf.grads, on the current backend. */
function runOp(xv: Float32Array, wv: Float32Array, maskv: Int32Array, rv: Float32Array, m: number, k: number, n: number, b: number) {
  return tf.tidy(() => {
    const x = tf.tensor2d(xv, [m, k]);
    const w = tf.tensor2d(wv, [k, n]);
    const mask = tf.tensor2d(maskv, [k / b, n / b], 'int32');
    const r = tf.tensor2d(rv, [m, n]);
    const y = blockSparseMatMul(x, w, mask, b);
    const [dx, dw] = tf.grads((xi: tf.Tensor, wi: tf.Tensor) => tf.sum(tf.mul(blockSparseMatMul(xi as tf.Tensor2D, wi as tf.Tensor2D, mask, b), r)))([x, w]);
    expect(y.shape).toEqual([m, n]);
    expect(dx!.shape).toEqual([m, k]);
    expect(dw!.shape).toEqual([k, n]);
    return { y: y.dataSync() as Float32Array, dx: dx!.dataSync() as Float32Array, dw: dw!.dataSync() as Float32Array };
  });
}

async function check(m: number, k: number, n: number, b: number, density: number, seed: number) {
  const what = `[${m},${k}]@[${k},${n}] b=${b} density=${density}`;
  const xv = rand(m * k, seed);
  const wv = rand(k * n, seed + 1);
  const rv = rand(m * n, seed + 2);
  const maskv = makeMask(k / b, n / b, density, seed + 3);
  const kept = (r: number, c: number) => maskv[Math.floor(r / b) * (n / b) + Math.floor(c / b)] !== 0;
  const wPoisoned = Float32Array.from(wv, (v, i) => (kept(Math.floor(i / n), i % n) ? v : NaN));
  const ref = reference(xv, wv, maskv, rv, m, k, n, b);

  const got = await on('cpu', () => {
    expect(hasFusedKernel('PfBlockSparseMatMul')).toBe(true);
    return runOp(xv, wPoisoned, maskv, rv, m, k, n, b);
  });
  expectNear(got.y, ref.y, k, `${what}: y vs float64`);
  expectNear(got.dx, ref.dx, n, `${what}: dx vs float64`);
  expectNear(got.dw, ref.dw, m, `${what}: dw vs float64`);
  // dw is exactly zero outside the kept blocks (not merely small)
  for (let i = 0; i < k * n; i++) {
    if (!kept(Math.floor(i / n), i % n) && !Object.is(got.dw[i], 0)) {
      expect.fail(`${what}: dw[${Math.floor(i / n)},${i % n}] = ${got.dw[i]} in a masked block`);
    }
  }

  // the composite x @ (w⊙M) (unpoisoned w: NaN * 0 would be NaN there) and its tfjs gradients
  const comp = await on('cpu', () =>
    tf.tidy(() => {
      const x = tf.tensor2d(xv, [m, k]);
      const w = tf.tensor2d(wv, [k, n]);
      const mask = tf.tensor2d(maskv, [k / b, n / b], 'int32');
      const r = tf.tensor2d(rv, [m, n]);
      const f = (xi: tf.Tensor, wi: tf.Tensor) => blockSparseMatMulComposite(xi as tf.Tensor2D, wi as tf.Tensor2D, mask, b);
      const [dx, dw] = tf.grads((xi: tf.Tensor, wi: tf.Tensor) => tf.sum(tf.mul(f(xi, wi), r)))([x, w]);
      return { y: f(x, w).dataSync() as Float32Array, dx: dx!.dataSync() as Float32Array, dw: dw!.dataSync() as Float32Array };
    }),
  );
  const tol = (red: number) => 1e-5 * Math.sqrt(red);
  expectClose(got.y, comp.y, tol(k) * Math.max(maxAbs(ref.y), 1e-30), tol(k), `${what}: y vs composite`);
  expectClose(got.dx, comp.dx, tol(n) * Math.max(maxAbs(ref.dx), 1e-30), tol(n), `${what}: dx vs composite`);
  expectClose(got.dw, comp.dw, tol(m) * Math.max(maxAbs(ref.dw), 1e-30), tol(m), `${what}: dw vs composite`);
}

describe('blockSparseMatMul on cpu (native kernels)', { timeout: 120_000 }, () => {
  it('the kernels are registered: hasFusedKernel and capabilities say so', async () => {
    await on('cpu', () => expect(hasFusedKernel('PfBlockSparseMatMul')).toBe(true));
    expect(cpuBackend.capabilities().fusedOps).toContain('PfBlockSparseMatMul');
  });

  // M not a multiple of 8 or 16 (37, 130, 5, 1); non-square w; one row / column of blocks (K = b, N = b).
  const shapes: [number, number, number, number][] = [
    [37, 12, 20, 4],
    [1, 8, 16, 4],
    [130, 64, 48, 16],
    [5, 16, 80, 16],
    [19, 96, 64, 32],
    [64, 32, 128, 32],
  ];
  shapes.forEach(([m, k, n, b], si) => {
    for (const density of [0, 0.25, 0.5, 1]) {
      it(`[${m},${k}]@[${k},${n}] b=${b} density=${density}: y, dx, dw vs float64 and the composite`, () => check(m, k, n, b, density, 100 + 10 * si));
    }
  });

  it('larger shapes (threaded paths): [300,256]@[256,160] b=32 and [520,128]@[128,96] b=16', async () => {
    await check(300, 256, 160, 32, 0.5, 200);
    await check(520, 128, 96, 16, 0.25, 210);
  });

  it('b not a multiple of 16 on the threaded path: [700,72]@[72,48] b=24, density 0.5', () => check(700, 72, 48, 24, 0.5, 220));

  it('a mask of any non-zero values (not just 1) keeps blocks', async () => {
    const [m, k, n, b] = [9, 32, 32, 16];
    const xv = rand(m * k, 230);
    const wv = rand(k * n, 231);
    const got = await on('cpu', () =>
      tf.tidy(() => blockSparseMatMul(tf.tensor2d(xv, [m, k]), tf.tensor2d(wv, [k, n]), tf.tensor2d([7, 0, -1, 0], [2, 2], 'int32'), b).dataSync()),
    );
    const ref = reference(xv, wv, Int32Array.from([1, 0, 1, 0]), new Float32Array(m * n), m, k, n, b);
    expectNear(got, ref.y, k, 'mask values 7 / -1');
  });
});

describe('PfBlockSparseMatMul(Grad) kernels validate their inputs', () => {
  const run = (name: string, inputs: Record<string, tf.Tensor>, blockSize: number) => () => tf.engine().runKernel(name, inputs, { blockSize });

  it('throws clear errors for wrong dtypes and inconsistent shapes', async () => {
    await on('cpu', () => {
      tf.tidy(() => {
        const x = tf.zeros([4, 8]);
        const w = tf.zeros([8, 16]);
        const mask = tf.ones([2, 4], 'int32');
        const dy = tf.zeros([4, 16]);
        expect(run('PfBlockSparseMatMul', { x, w, blockMask: tf.ones([2, 4]) }, 4)).toThrow(/PfBlockSparseMatMul: blockMask must be int32/);
        expect(run('PfBlockSparseMatMul', { x: tf.zeros([4, 8], 'int32'), w, blockMask: mask }, 4)).toThrow(/x and w must be float32/);
        expect(run('PfBlockSparseMatMul', { x: tf.zeros([4, 6]), w, blockMask: mask }, 4)).toThrow(/do not chain/);
        expect(run('PfBlockSparseMatMul', { x, w, blockMask: mask }, 3)).toThrow(/blockSize 3 must be a positive integer dividing/);
        expect(run('PfBlockSparseMatMul', { x, w, blockMask: tf.ones([4, 2], 'int32') }, 4)).toThrow(/blockMask is \[4,2\] but w \[8,16\] in 4×4 blocks needs \[2,4\]/);
        expect(run('PfBlockSparseMatMulGrad', { x, w, blockMask: mask, dy: tf.zeros([4, 8]) }, 4)).toThrow(/PfBlockSparseMatMulGrad: dy is \[4,8\] but y is \[4,16\]/);
        expect(run('PfBlockSparseMatMulGrad', { x, w, blockMask: mask, dy: tf.zeros([4, 16], 'int32') }, 4)).toThrow(/dy must be float32/);
        // the valid call runs
        const [dx, dw] = tf.engine().runKernel('PfBlockSparseMatMulGrad', { x, w, blockMask: mask, dy }, { blockSize: 4 }) as tf.Tensor[];
        expect(dx!.shape).toEqual([4, 8]);
        expect(dw!.shape).toEqual([8, 16]);
      });
    });
  });
});

describe('setFusedKernelsEnabled(false) runs the composite on the cpu backend', () => {
  it('blockSparseMatMul composite on cpu equals the fused kernel (forward and gradients)', async () => {
    const [m, k, n, b] = [21, 64, 96, 32];
    const xv = rand(m * k, 301);
    const wv = rand(k * n, 302);
    const rv = rand(m * n, 303);
    const maskv = makeMask(k / b, n / b, 0.5, 304);
    const fused = await on('cpu', () => runOp(xv, wv, maskv, rv, m, k, n, b));
    setFusedKernelsEnabled(false);
    try {
      const comp = await on('cpu', () => {
        expect(hasFusedKernel('PfBlockSparseMatMul')).toBe(false);
        return runOp(xv, wv, maskv, rv, m, k, n, b);
      });
      expectClose(fused.y, comp.y, 1e-4, 1e-4, 'y');
      expectClose(fused.dx, comp.dx, 1e-4, 1e-4, 'dx');
      expectClose(fused.dw, comp.dw, 1e-4, 1e-4, 'dw');
    } finally {
      setFusedKernelsEnabled(true);
    }
    await on('cpu', () => expect(hasFusedKernel('PfBlockSparseMatMul')).toBe(true));
  });
});

describe('blockSparseMatMul with a bias', () => {
  it('adds the bias to every row; its gradient is the column sum of dy (vs plain JS)', async () => {
    const [m, k, n, b] = [37, 64, 96, 16];
    const xv = rand(m * k, 401);
    const wv = rand(k * n, 402);
    const rv = rand(m * n, 403);
    const bv = rand(n, 404);
    const maskv = makeMask(k / b, n / b, 0.5, 405);
    const ref = reference(xv, wv, maskv, rv, m, k, n, b);
    const got = await on('cpu', () =>
      tf.tidy(() => {
        const x = tf.tensor2d(xv, [m, k]);
        const w = tf.tensor2d(wv, [k, n]);
        const bias = tf.tensor1d(bv);
        const mask = tf.tensor2d(maskv, [k / b, n / b], 'int32');
        const r = tf.tensor2d(rv, [m, n]);
        const f = (xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) => blockSparseMatMul(xi as tf.Tensor2D, wi as tf.Tensor2D, mask, b, bi);
        const y = f(x, w, bias);
        const [dx, dw, db] = tf.grads((xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor) => tf.sum(tf.mul(f(xi, wi, bi), r)))([x, w, bias]);
        return { y: y.dataSync(), dx: dx!.dataSync(), dw: dw!.dataSync(), db: db!.dataSync() };
      }),
    );
    const yb = Float64Array.from(ref.y, (v, i) => v + bv[i % n]!);
    const db = new Float64Array(n);
    for (let i = 0; i < m * n; i++) db[i % n] += rv[i]!;
    expectNear(got.y, yb, k, 'y + bias');
    expectNear(got.dx, ref.dx, n, 'dx');
    expectNear(got.dw, ref.dw, m, 'dw');
    expectNear(got.db, db, m, 'dbias');
  });
});
