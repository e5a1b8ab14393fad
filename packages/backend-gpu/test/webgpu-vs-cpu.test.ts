/**
 * The webgpu backend against patchflow's cpu backend (and, for matMul, against a float64 reference in
 * plain JS). Skips when this machine has no WebGPU adapter, unless CI is set: then it fails.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { causalAttention, crossEntropy, gelu, layerNorm, tf, useBackend } from '@patchflow/tensor';
import '../src/index.js';
import { compareBackends, expectClose, gpuGate, IN_CI, randInt, randn, rt } from './helpers.js';

const gate = await gpuGate();

describe('WebGPU adapter', () => {
  it('is available (required when CI is set)', (ctx) => {
    if (gate.ok) return;
    if (IN_CI) expect.fail(`CI is set but the webgpu backend is unavailable, so its tests cannot run: ${gate.reason}`);
    ctx.skip(gate.reason);
  });
});

describe.skipIf(!gate.ok)('webgpu vs cpu', () => {
  beforeAll(async () => {
    await useBackend('webgpu');
    // Without this tfjs-backend-webgpu computes small ops whose inputs still sit in CPU memory with
    // its bundled JS kernels, and the GPU kernels would go untested.
    tf.env().set('WEBGPU_CPU_FORWARD', false);
    expect(tf.getBackend()).toBe('webgpu');
  });

  describe('matMul', () => {
    // float64 reference of op(a) @ op(b), a/b row-major [.., r, c]; batch dims broadcast numpy-style.
    function refMatMul(a: Float32Array, aShape: number[], b: Float32Array, bShape: number[], ta: boolean, tb: boolean) {
      const [ar, ac] = aShape.slice(-2) as [number, number];
      const [br, bc] = bShape.slice(-2) as [number, number];
      const [m, k] = ta ? [ac, ar] : [ar, ac];
      const n = tb ? br : bc;
      const aB = aShape.slice(0, -2);
      const bB = bShape.slice(0, -2);
      const rank = Math.max(aB.length, bB.length);
      const pad = (s: number[]) => [...Array(rank - s.length).fill(1), ...s] as number[];
      const pa = pad(aB);
      const pb = pad(bB);
      const outB = pa.map((d, i) => Math.max(d, pb[i]!));
      const nb = outB.reduce((x, y) => x * y, 1);
      const out = new Float64Array(nb * m * n);
      for (let bi = 0; bi < nb; bi++) {
        let rem = bi;
        let ia = 0;
        let ib = 0;
        let sa = 1;
        let sb = 1;
        for (let d = rank - 1; d >= 0; d--) {
          const idx = rem % outB[d]!;
          rem = Math.floor(rem / outB[d]!);
          ia += (pa[d] === 1 ? 0 : idx) * sa;
          ib += (pb[d] === 1 ? 0 : idx) * sb;
          sa *= pa[d]!;
          sb *= pb[d]!;
        }
        const oa = ia * ar * ac;
        const ob = ib * br * bc;
        for (let i = 0; i < m; i++)
          for (let j = 0; j < n; j++) {
            let s = 0;
            for (let p = 0; p < k; p++) {
              const av = ta ? a[oa + p * ac + i]! : a[oa + i * ac + p]!;
              const bv = tb ? b[ob + j * bc + p]! : b[ob + p * bc + j]!;
              s += av * bv;
            }
            out[(bi * m + i) * n + j] = s;
          }
      }
      return out;
    }

    const cases: { name: string; a: number[]; b: number[] }[] = [
      { name: '2-D 7x13 @ 13x5', a: [7, 13], b: [13, 5] },
      { name: '2-D 65x129 @ 129x33 (tiled programs)', a: [65, 129], b: [129, 33] },
      { name: '2-D vector-ish 1x31 @ 31x17', a: [1, 31], b: [31, 17] },
      { name: 'batched [3,7,13] @ [3,13,5]', a: [3, 7, 13], b: [3, 13, 5] },
      { name: 'batched rank 4 [2,3,7,13] @ [2,3,13,5]', a: [2, 3, 7, 13], b: [2, 3, 13, 5] },
      // tfjs broadcasts batch dims only when one side's batch is 1 (or they are equal).
      { name: 'broadcast [2,3,7,13] @ [13,5] (linear layer)', a: [2, 3, 7, 13], b: [13, 5] },
      { name: 'broadcast [1,9,11] @ [4,11,3]', a: [1, 9, 11], b: [4, 11, 3] },
      { name: 'broadcast [4,9,11] @ [1,11,3]', a: [4, 9, 11], b: [1, 11, 3] },
    ];
    for (const c of cases) {
      for (const [ta, tb] of [
        [false, false],
        [true, false],
        [false, true],
        [true, true],
      ] as const) {
        it(`${c.name}, transposeA=${ta} transposeB=${tb}`, async () => {
          // Stored shapes: swap the last two dims of an operand that is transposed.
          const sw = (s: number[], t: boolean) => (t ? [...s.slice(0, -2), s.at(-1)!, s.at(-2)!] : s);
          const aShape = sw(c.a, ta);
          const bShape = sw(c.b, tb);
          const av = randn(aShape.reduce((x, y) => x * y, 1), 11);
          const bv = randn(bShape.reduce((x, y) => x * y, 1), 12);
          const r = await compareBackends(c.name, () => tf.matMul(tf.tensor(av, aShape), tf.tensor(bv, bShape), ta, tb), 2e-4, 2e-4);
          const ref = refMatMul(av, aShape, bv, bShape, ta, tb);
          expectClose(r.gpu[0]!.values, ref, `${c.name} vs float64 reference`, 2e-4, 2e-4);
        });
      }
    }
  });

  describe('patchflow ops (ops.ts composites), forward and gradients', () => {
    it('gelu', async () => {
      const xv = randn(257, 21, 3);
      xv[0] = 0;
      xv[1] = -9;
      xv[2] = 9;
      await compareBackends('gelu', () => gelu(tf.tensor(xv)));
      await compareBackends('gelu grad', () => tf.grads((x: tf.Tensor) => gelu(x))([tf.tensor(xv)], tf.tensor(randn(257, 22))));
    });

    it('layerNorm over the last axis, rank 3, and its gradients wrt x, gamma, beta', async () => {
      const shape = [3, 5, 33];
      const f = (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => layerNorm(x, g, b);
      const inputs = () => [rt(shape, 31, 2), tf.add(1, rt([33], 32, 0.3)), rt([33], 33, 0.3)];
      await compareBackends('layerNorm', () => f(...(inputs() as [tf.Tensor, tf.Tensor, tf.Tensor])));
      await compareBackends('layerNorm grads', () => tf.grads(f)(inputs(), rt(shape, 34)), 2e-4, 2e-4);
    });

    // ops.ts caches the causal mask per T across backends; a mask that moved to webgpu cannot move
    // back (no synchronous GPU reads in Node), so each cpu-then-webgpu comparison uses its own T.
    it('causalAttention [B,H,T,D] = [2,3,7,5] and its gradients wrt q, k, v', async () => {
      const f = (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => causalAttention(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D);
      const inputs = (shape: number[]) => [rt(shape, 41), rt(shape, 42), rt(shape, 43)];
      await compareBackends('causalAttention', () => f(...(inputs([2, 3, 7, 5]) as [tf.Tensor, tf.Tensor, tf.Tensor])));
      await compareBackends('causalAttention grads', () => tf.grads(f)(inputs([2, 3, 6, 5]), rt([2, 3, 6, 5], 44)), 2e-4, 2e-4);
    });

    it('causalAttention: the first query row attends only to itself (hand-worked)', async () => {
      await useBackend('webgpu');
      const q = rt([1, 1, 4, 3], 45);
      const k = rt([1, 1, 4, 3], 46);
      const v = rt([1, 1, 4, 3], 47);
      const out = await causalAttention(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D).data();
      const vv = await v.data();
      expectClose(out.slice(0, 3), vv.slice(0, 3), 'out[0] == v[0]', 1e-5, 1e-5);
      tf.dispose([q, k, v]);
    });

    for (const K of [1, 4]) {
      it(`crossEntropy with K=${K} labels per row, and its gradient wrt logits`, async () => {
        const [n, v] = [9, 37];
        const labels = randInt(n * K, 50 + K, v);
        // labels are made outside the differentiated function: ops.ts's fused path (cpu) reads them in
        // its gradient through a closure, after tf.grads has disposed the forward pass's tensors.
        const run = (grad: boolean) => () => {
          const lab = tf.tensor2d(labels, [n, K], 'int32');
          const f = (lg: tf.Tensor) => crossEntropy(lg as tf.Tensor2D, lab as tf.Tensor2D);
          return grad ? tf.grads(f)([rt([n, v], 51, 2)], rt([n], 52)) : f(rt([n, v], 51, 2));
        };
        await compareBackends(`crossEntropy K=${K}`, run(false));
        await compareBackends(`crossEntropy K=${K} grad`, run(true));
      });
    }

    it('crossEntropy with uniform logits is log(V) (hand-worked)', async () => {
      await useBackend('webgpu');
      const loss = await crossEntropy(tf.zeros([3, 10]) as tf.Tensor2D, tf.tensor2d([[1, 2], [3, 3], [9, 0]], [3, 2], 'int32')).data();
      expectClose(loss, [Math.log(10), Math.log(10), Math.log(10)], 'loss', 1e-5, 1e-5);
    });
  });

  describe('embedding', () => {
    it('gather rows of a table and its gradient (UnsortedSegmentSum, repeated ids)', async () => {
      const [vocab, dim] = [50, 12];
      const ids = randInt(3 * 7, 61, vocab);
      ids[0] = ids[5] = ids[9] = 17; // repeats: their gradients must add up
      const f = (table: tf.Tensor) => tf.gather(table, tf.tensor2d(ids, [3, 7], 'int32'));
      await compareBackends('gather', () => f(rt([vocab, dim], 62)));
      const r = await compareBackends('gather grad', () => tf.grads(f)([rt([vocab, dim], 62)], rt([3, 7, dim], 63)));
      // Rows of the table no id points at get no gradient.
      const used = new Set(ids);
      const g = r.gpu[0]!.values;
      for (let row = 0; row < vocab; row++) {
        if (used.has(row)) continue;
        expect(Array.from(g.slice(row * dim, (row + 1) * dim)).every((x) => x === 0), `row ${row} gradient`).toBe(true);
      }
    });

    it('unsortedSegmentSum directly', async () => {
      const seg = randInt(40, 64, 6);
      await compareBackends('unsortedSegmentSum', () => tf.unsortedSegmentSum(rt([40, 9], 65), tf.tensor1d(seg, 'int32'), 6));
    });
  });

  describe('softmax and reductions', () => {
    it('softmax and logSoftmax along the last axis (rank 2 and 4)', async () => {
      await compareBackends('softmax 2-D', () => tf.softmax(rt([4, 33], 71, 4)), 1e-5, 1e-4);
      await compareBackends('softmax 4-D', () => tf.softmax(rt([2, 3, 5, 17], 72, 4)), 1e-5, 1e-4);
      await compareBackends('logSoftmax', () => tf.logSoftmax(rt([6, 129], 73, 4)));
      await compareBackends('softmax grad', () => tf.grads((x: tf.Tensor) => tf.softmax(x))([rt([5, 23], 74, 3)], rt([5, 23], 75)));
    });

    it('sum, mean, max, min, argMax, logSumExp over different axes', async () => {
      const x = () => rt([3, 5, 7, 11], 81);
      await compareBackends('sum all', () => tf.sum(x()));
      await compareBackends('sum axis -1', () => tf.sum(x(), -1));
      await compareBackends('sum axes [0,2] keepDims', () => tf.sum(x(), [0, 2], true));
      await compareBackends('mean axis 1', () => tf.mean(x(), 1));
      await compareBackends('max axis -1', () => tf.max(x(), -1));
      await compareBackends('min axis 0', () => tf.min(x(), 0));
      await compareBackends('argMax axis -1', () => tf.argMax(x(), -1));
      await compareBackends('logSumExp axis -1', () => tf.logSumExp(x(), -1));
      await compareBackends('sum of 100000', () => tf.sum(rt([100_000], 82)), 1e-3, 1e-4);
      await compareBackends('mean grad', () => tf.grads((a: tf.Tensor) => tf.mean(tf.square(a), -1))([x()], rt([3, 5, 7], 83)));
    });
  });

  describe('int32 transposes (tfjs-backend-webgpu 4.22 bug, fixed by this package)', () => {
    it('rank 2, 3 and 4 int32 transposes are exact, values beyond 2^24 included', async () => {
      const big = (n: number, seed: number) => {
        const v = randInt(n, seed, 1000);
        for (let i = 0; i < n; i += 3) v[i] = 2 ** 30 + 2 * i + 1; // not representable in f32
        return v;
      };
      const cases: [number[], number[]][] = [
        [[5, 7], [1, 0]],
        [[3, 4, 5], [0, 2, 1]],
        [[3, 4, 5], [2, 0, 1]],
        [[2, 3, 4, 5], [3, 1, 0, 2]],
      ];
      for (const [shape, perm] of cases) {
        const v = big(shape.reduce((a, b) => a * b, 1), shape.length);
        await compareBackends(`transpose int32 ${shape} perm ${perm}`, () => tf.transpose(tf.tensor(v, shape, 'int32'), perm), 0, 0);
      }
      await compareBackends('sum of an int32 one-hot over a middle axis', () =>
        tf.sum(tf.reshape(tf.oneHot(tf.tensor1d(randInt(12, 5, 6), 'int32'), 6), [3, 4, 6]), 1),
      0, 0);
    });
  });

  it('dataSync in Node fails with an explanation, not "OffscreenCanvas is not defined"', async () => {
    await useBackend('webgpu');
    const t = tf.add(tf.ones([4]), 1);
    expect(() => t.dataSync()).toThrow(/use `await tensor.data\(\)`/);
    expect(Array.from(await t.data())).toEqual([2, 2, 2, 2]);
    t.dispose();
  });

  describe('rank', () => {
    it('rank-4 pad and transpose (the highest rank the backend claims) match cpu', async () => {
      await compareBackends('pad rank 4', () => tf.pad(rt([2, 3, 4, 5], 91), [[0, 1], [2, 0], [1, 1], [0, 2]]));
      await compareBackends('transpose rank 4', () => tf.transpose(rt([2, 3, 4, 5], 92), [3, 1, 0, 2]));
    });
  });
});
