import { describe, it, expect, beforeAll } from 'vitest';
import { tf, on, rand, expectClose, matmul64 } from './helpers.js';
import { nativeInfo } from '../src/index.js';

beforeAll(async () => {
  await on('cpu', () => undefined);
  expect(nativeInfo().loaded, nativeInfo().reason).toBe(true);
});

/** fp32 tolerance for a K-term dot product of values in [-1, 1]. */
const tol = (K: number) => 1e-5 * Math.max(1, Math.sqrt(K)) * 4;

const SIZES = [1, 3, 17, 65, 130];

describe('BatchMatMul (native) vs plain-JS triple loop', { timeout: 60_000 }, () => {
  for (const ta of [false, true])
    for (const tb of [false, true]) {
      it(`all size combinations ${SIZES.join(',')}, transposeA=${ta} transposeB=${tb}`, async () => {
        await on('cpu', () => {
          let seed = 1;
          for (const M of SIZES)
            for (const N of SIZES)
              for (const K of SIZES) {
                const a = rand(M * K, seed++);
                const b = rand(K * N, seed++);
                const got = tf.tidy(() => tf.matMul(tf.tensor2d(a, ta ? [K, M] : [M, K]), tf.tensor2d(b, tb ? [N, K] : [K, N]), ta, tb).dataSync());
                expectClose(got, matmul64(a, b, 1, 1, M, N, K, ta, tb), tol(K), 0, `M=${M} N=${N} K=${K}`);
              }
        });
      });
    }

  it('blocking edges: K > KC, M > MC, N > NC, all layouts', async () => {
    await on('cpu', () => {
      const [M, N, K] = [131, 1100, 300];
      const a = rand(M * K, 7);
      const b = rand(K * N, 8);
      for (const ta of [false, true])
        for (const tb of [false, true]) {
          const got = tf.tidy(() => tf.matMul(tf.tensor2d(a, ta ? [K, M] : [M, K]), tf.tensor2d(b, tb ? [N, K] : [K, N]), ta, tb).dataSync());
          expectClose(got, matmul64(a, b, 1, 1, M, N, K, ta, tb), tol(K), 0, `ta=${ta} tb=${tb}`);
        }
    });
  });

  const batchCases: [number[], number[]][] = [
    [[3], [3]],
    [[3], [1]],
    [[1], [4]],
    [[3], []],
    [[], [2]],
    [[2, 3], [2, 3]],
    [[2, 3], [1, 1]],
  ];
  for (const [ba, bb] of batchCases)
    it(`batch broadcasting a[${ba}] x b[${bb}] in all layouts`, async () => {
      await on('cpu', () => {
        const [M, N, K] = [17, 33, 65];
        const nA = ba.reduce((x, y) => x * y, 1);
        const nB = bb.reduce((x, y) => x * y, 1);
        const a = rand(nA * M * K, 11);
        const b = rand(nB * K * N, 12);
        for (const ta of [false, true])
          for (const tb of [false, true]) {
            const r = tf.tidy(() => tf.matMul(tf.tensor(a, [...ba, ...(ta ? [K, M] : [M, K])]), tf.tensor(b, [...bb, ...(tb ? [N, K] : [K, N])]), ta, tb));
            const outer = ba.length >= bb.length ? ba.map((d, i) => Math.max(d, bb[i - (ba.length - bb.length)] ?? 1)) : bb.map((d, i) => Math.max(d, ba[i - (bb.length - ba.length)] ?? 1));
            expect(r.shape).toEqual([...outer, M, N]);
            expectClose(r.dataSync(), matmul64(a, b, nA, nB, M, N, K, ta, tb), tol(K), 0, `ta=${ta} tb=${tb}`);
            r.dispose();
          }
      });
    });

  it('empty inner dimension gives zeros (plus bias)', async () => {
    await on('cpu', () => {
      expect(Array.from(tf.tidy(() => tf.matMul(tf.zeros([3, 0]), tf.zeros([0, 4])).dataSync()))).toEqual(new Array(12).fill(0));
      const r = tf.tidy(() => tf.fused.matMul({ a: tf.zeros([2, 0]) as tf.Tensor2D, b: tf.zeros([0, 3]) as tf.Tensor2D, bias: tf.tensor1d([1, 2, 3]) }).dataSync());
      expect(Array.from(r)).toEqual([1, 2, 3, 1, 2, 3]);
      expect(tf.tidy(() => tf.matMul(tf.zeros([0, 5]), tf.zeros([5, 4])).shape)).toEqual([0, 4]);
    });
  });

  it('matches the stock kernel for a case it hands back (int32)', async () => {
    const a = Int32Array.from({ length: 12 }, (_, i) => i - 5);
    const b = Int32Array.from({ length: 12 }, (_, i) => 3 - i);
    const want = await on('tfjs-cpu', () => tf.tidy(() => tf.matMul(tf.tensor2d(a, [3, 4], 'int32'), tf.tensor2d(b, [4, 3], 'int32')).dataSync()));
    const got = await on('cpu', () => tf.tidy(() => tf.matMul(tf.tensor2d(a, [3, 4], 'int32'), tf.tensor2d(b, [4, 3], 'int32')).dataSync()));
    expect(Array.from(got)).toEqual(Array.from(want));
  });
});

describe('_FusedMatMul (native bias + activation)', { timeout: 60_000 }, () => {
  const [M, N, K] = [65, 130, 17];
  const a = rand(M * K, 21);
  const b = rand(K * N, 22);
  const bias = rand(N, 23);
  const ref = (act: (x: number) => number, ta = false, tb = false) => {
    const c = matmul64(a, b, 1, 1, M, N, K, ta, tb);
    return c.map((v, i) => act(v + bias[i % N]!));
  };
  for (const [activation, f] of [
    ['linear', (x: number) => x],
    ['relu', (x: number) => Math.max(0, x)],
    ['relu6', (x: number) => Math.min(6, Math.max(0, x))],
    ['elu', (x: number) => (x > 0 ? x : Math.expm1(x))],
    ['sigmoid', (x: number) => 1 / (1 + Math.exp(-x))],
    ['leakyrelu', (x: number) => (x > 0 ? x : 0.1 * x)],
  ] as const)
    it(`bias + ${activation}, all layouts`, async () => {
      await on('cpu', () => {
        for (const ta of [false, true])
          for (const tb of [false, true]) {
            const got = tf.tidy(() =>
              tf.fused
                .matMul({ a: tf.tensor2d(a, ta ? [K, M] : [M, K]), b: tf.tensor2d(b, tb ? [N, K] : [K, N]), transposeA: ta, transposeB: tb, bias: tf.tensor1d(bias), activation, leakyreluAlpha: 0.1 })
                .dataSync(),
            );
            expectClose(got, ref(f, ta, tb), 1e-4, 1e-5, `${activation} ta=${ta} tb=${tb}`);
          }
      });
    });

  it('prelu and a non-row bias fall back to the stock kernel with the same result', async () => {
    const alpha = rand(N, 24);
    const bias2 = rand(M * N, 25);
    const run = () =>
      tf.tidy(() => [
        tf.fused.matMul({ a: tf.tensor2d(a, [M, K]), b: tf.tensor2d(b, [K, N]), bias: tf.tensor1d(bias), activation: 'prelu', preluActivationWeights: tf.tensor1d(alpha) }).dataSync(),
        tf.fused.matMul({ a: tf.tensor2d(a, [M, K]), b: tf.tensor2d(b, [K, N]), bias: tf.tensor2d(bias2, [M, N]) }).dataSync(),
      ]);
    const want = await on('tfjs-cpu', run);
    const got = await on('cpu', run);
    expectClose(got[0]!, want[0]!, 1e-5, 1e-5, 'prelu');
    expectClose(got[1]!, want[1]!, 1e-5, 1e-5, '2d bias');
  });

  it('gradients through fused.matMul match the stock backend', async () => {
    const run = () => {
      const g = tf.grads((x: tf.Tensor, w: tf.Tensor, bs: tf.Tensor) => tf.sum(tf.mul(tf.fused.matMul({ a: x as tf.Tensor2D, b: w as tf.Tensor2D, bias: bs, activation: 'relu' }), 0.5)));
      return g([tf.tensor2d(a, [M, K]), tf.tensor2d(b, [K, N]), tf.tensor1d(bias)]).map((t) => t.dataSync());
    };
    const want = await on('tfjs-cpu', run);
    const got = await on('cpu', run);
    for (let i = 0; i < 3; i++) expectClose(got[i]!, want[i]!, 1e-4, 1e-4, `grad ${i}`);
  });
});
