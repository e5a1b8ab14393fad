/**
 * The stock tfjs kernels the cpu backend replaces (Softmax, UnsortedSegmentSum, Transpose, Sum,
 * SplitV, Add/Sub/Multiply/RealDiv) against the stock tfjs-cpu kernels, plus plain-JS references
 * where the stock kernel could share a bug.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { tf, on, rand, expectClose } from './helpers.js';
import { nativeInfo } from '../src/index.js';

beforeAll(async () => {
  await on('cpu', () => undefined);
  expect(nativeInfo().loaded, nativeInfo().reason).toBe(true);
});

/** Runs f on both backends and returns [ours, stock] flat results. */
async function both(f: () => tf.Tensor | tf.Tensor[]): Promise<[Float32Array[], Float32Array[], number[][]]> {
  const run = () =>
    tf.tidy(() => {
      const r = f();
      const list = Array.isArray(r) ? r : [r];
      return list.map((t) => ({ v: Float32Array.from(t.dataSync()), s: t.shape }));
    });
  const ours = await on('cpu', run);
  const stock = await on('tfjs-cpu', run);
  ours.forEach((o, i) => expect(o.s, `shape of output ${i}`).toEqual(stock[i]!.s));
  return [ours.map((o) => o.v), stock.map((o) => o.v), ours.map((o) => o.s)];
}

describe('Softmax', () => {
  for (const shape of [[1, 1], [3, 17], [2, 5, 130], [600, 257]])
    it(`[${shape}] vs stock and plain JS`, async () => {
      const n = shape.reduce((a, b) => a * b, 1);
      const x = rand(n, 1, 20);
      const [ours, stock] = await both(() => tf.softmax(tf.tensor(x, shape)));
      expectClose(ours[0]!, stock[0]!, 1e-6, 1e-5);
      const C = shape[shape.length - 1]!;
      const ref = new Float64Array(n);
      for (let r = 0; r < n / C; r++) {
        let m = -Infinity;
        for (let c = 0; c < C; c++) m = Math.max(m, x[r * C + c]!);
        let s = 0;
        for (let c = 0; c < C; c++) s += Math.exp(x[r * C + c]! - m);
        for (let c = 0; c < C; c++) ref[r * C + c] = Math.exp(x[r * C + c]! - m) / s;
      }
      expectClose(ours[0]!, ref, 1e-6, 1e-5, 'vs plain JS');
    });
});

describe('UnsortedSegmentSum (embedding gradient)', { timeout: 60_000 }, () => {
  it('gather gradient vs stock and plain JS, repeated and out-of-range ids', async () => {
    const [V, D, S] = [37, 19, 300];
    const ids = Int32Array.from({ length: S }, (_, i) => (i * i * 7 + 3) % V);
    const dy = rand(S * D, 2);
    const [ours, stock] = await both(() => tf.unsortedSegmentSum(tf.tensor2d(dy, [S, D]), tf.tensor1d(ids, 'int32'), V));
    expectClose(ours[0]!, stock[0]!, 1e-5, 1e-5);
    const ref = new Float64Array(V * D);
    for (let i = 0; i < S; i++) for (let d = 0; d < D; d++) ref[ids[i]! * D + d]! += dy[i * D + d]!;
    expectClose(ours[0]!, ref, 1e-5, 1e-5, 'vs plain JS');
    // ids beyond numSegments are dropped
    const [o2, s2] = await both(() => tf.unsortedSegmentSum(tf.tensor2d(dy, [S, D]), tf.tensor1d(ids, 'int32'), 20));
    expectClose(o2[0]!, s2[0]!, 1e-5, 1e-5, 'numSegments < max id');
  });

  it('large (threaded path) vs plain JS', async () => {
    const [S, D, V] = [4096, 300, 256];
    const big = rand(S * D, 3);
    const ids = Int32Array.from({ length: S }, (_, i) => (i * 31) % V);
    const got = await on('cpu', () => tf.tidy(() => tf.unsortedSegmentSum(tf.tensor2d(big, [S, D]), tf.tensor1d(ids, 'int32'), V).dataSync()));
    const ref = new Float64Array(V * D);
    for (let i = 0; i < S; i++) for (let d = 0; d < D; d++) ref[ids[i]! * D + d]! += big[i * D + d]!;
    expectClose(got, ref, 1e-4, 1e-5, 'large');
  });
});

describe('Transpose', () => {
  const cases: [number[], number[]][] = [
    [[5, 7], [1, 0]],
    [[2, 3, 4, 5], [0, 2, 1, 3]],
    [[2, 3, 4, 5], [3, 1, 0, 2]],
    [[4, 128, 4, 32], [0, 2, 1, 3]],
    [[2, 3, 4, 5, 6], [4, 3, 2, 1, 0]],
    [[1, 6, 1, 7], [2, 3, 0, 1]],
  ];
  for (const [shape, perm] of cases)
    it(`[${shape}] perm [${perm}] float32 and int32 vs stock`, async () => {
      const n = shape.reduce((a, b) => a * b, 1);
      const x = rand(n, 4);
      const xi = Int32Array.from({ length: n }, (_, i) => i * 3 - 7);
      const [ours, stock] = await both(() => [tf.transpose(tf.tensor(x, shape), perm), tf.transpose(tf.tensor(xi, shape, 'int32'), perm)]);
      expect(Array.from(ours[0]!)).toEqual(Array.from(stock[0]!));
      expect(Array.from(ours[1]!)).toEqual(Array.from(stock[1]!));
    });
});

describe('Sum', { timeout: 60_000 }, () => {
  const cases: [number[], number | number[], boolean][] = [
    [[7, 13], 0, false],
    [[7, 13], 1, true],
    [[7, 13], [0, 1], false],
    [[3, 4, 5], [1, 2], false],
    [[3, 4, 5], [0, 1], true],
    [[3, 4, 5], 1, false],
    [[3, 4, 5], [0, 2], false], // not contiguous: stock
    [[4096, 300], 0, false],
    [[200000], 0, false],
  ];
  for (const [shape, axis, keep] of cases)
    it(`[${shape}] axis ${JSON.stringify(axis)} keepDims=${keep} vs stock and plain JS`, async () => {
      const n = shape.reduce((a, b) => a * b, 1);
      const x = rand(n, 5);
      const [ours, stock] = await both(() => tf.sum(tf.tensor(x, shape), axis, keep));
      const red = (Array.isArray(axis) ? axis : [axis]).reduce((a, ax) => a * shape[ax]!, 1);
      expectClose(ours[0]!, stock[0]!, 1e-6 * red + 1e-6, 1e-5);
    });
});

describe('SplitV', () => {
  for (const [shape, splits, axis] of [
    [[6, 12], 3, 1],
    [[6, 12], [5, -1, 2], 1],
    [[6, 12], 2, 0],
    [[2, 3, 8], [1, 7], -1],
    [[2, 6, 4], [1, 2, 3], 1],
  ] as [number[], number | number[], number][])
    it(`[${shape}] split ${JSON.stringify(splits)} axis ${axis} vs stock`, async () => {
      const n = shape.reduce((a, b) => a * b, 1);
      const x = rand(n, 6);
      const [ours, stock] = await both(() => tf.split(tf.tensor(x, shape), splits, axis));
      expect(ours.length).toBe(stock.length);
      ours.forEach((o, i) => expect(Array.from(o)).toEqual(Array.from(stock[i]!)));
    });
});

describe('Add / Sub / Multiply / RealDiv', { timeout: 60_000 }, () => {
  const shapes: [number[], number[]][] = [
    [[5, 7], [5, 7]],
    [[5, 7], [7]],
    [[7], [5, 7]],
    [[5, 7], []],
    [[], [5, 7]],
    [[2, 3, 4], [1, 3, 4]],
    [[2, 3, 4], [3, 1]], // not a suffix: stock
    [[300, 1000], [300, 1000]], // threaded
    [[300, 1000], []],
    [[300, 1000], [1000]],
  ];
  for (const [sa, sb] of shapes)
    it(`[${sa}] op [${sb}] vs stock`, async () => {
      const a = rand(sa.reduce((x, y) => x * y, 1), 7);
      const b = rand(sb.reduce((x, y) => x * y, 1), 8).map((v) => v + (v >= 0 ? 0.5 : -0.5));
      const [ours, stock] = await both(() => {
        const ta = tf.tensor(a, sa);
        const tb = tf.tensor(b, sb);
        return [tf.add(ta, tb), tf.sub(ta, tb), tf.mul(ta, tb), tf.div(ta, tb)];
      });
      for (let i = 0; i < 4; i++) expectClose(ours[i]!, stock[i]!, 1e-6, 1e-6, ['add', 'sub', 'mul', 'div'][i]);
    });

  it('int32 goes to the stock kernel', async () => {
    const [ours, stock] = await both(() => tf.add(tf.tensor1d([1, 2, 3], 'int32'), tf.scalar(4, 'int32')));
    expect(Array.from(ours[0]!)).toEqual(Array.from(stock[0]!));
  });
});

describe('Concat', () => {
  for (const [shapes, axis] of [
    [[[6, 3], [6, 5], [6, 1]], 1],
    [[[2, 3], [4, 3]], 0],
    [[[2, 3, 4], [2, 0, 4], [2, 2, 4]], 1],
    [[[2, 3, 4], [2, 3, 1]], -1],
  ] as [number[][], number][])
    it(`${JSON.stringify(shapes)} axis ${axis} vs stock (float32 and int32)`, async () => {
      const [ours, stock] = await both(() => [
        tf.concat(shapes.map((s, i) => tf.tensor(rand(s.reduce((a, b) => a * b, 1), 70 + i), s)), axis),
        tf.concat(shapes.map((s, i) => tf.tensor(Int32Array.from({ length: s.reduce((a, b) => a * b, 1) }, (_, j) => j * (i + 2)), s, 'int32')), axis),
      ]);
      expect(Array.from(ours[0]!)).toEqual(Array.from(stock[0]!));
      expect(Array.from(ours[1]!)).toEqual(Array.from(stock[1]!));
    });
  it('is the gradient of split', async () => {
    const x = rand(8 * 12, 80);
    const w = rand(8 * 12, 81);
    const [ours, stock] = await both(() => tf.grad((t: tf.Tensor) => {
      const [a, b, c] = tf.split(t, 3, 1);
      return tf.sum(tf.mul(tf.concat([tf.mul(a!, 2), b!, tf.neg(c!)], 1), tf.tensor(w, [8, 12])));
    })(tf.tensor2d(x, [8, 12])));
    expectClose(ours[0]!, stock[0]!, 1e-6, 1e-6);
  });
});

describe('GatherV2', () => {
  it('axis 0 rows (float32, int32, rank-2 indices) vs stock; other axes via stock', async () => {
    const x = rand(10 * 6, 90);
    const ids = Int32Array.from([3, 0, 9, 3, 5, 1]);
    const [ours, stock] = await both(() => [
      tf.gather(tf.tensor2d(x, [10, 6]), tf.tensor1d(ids, 'int32')),
      tf.gather(tf.tensor2d(x, [10, 6]), tf.tensor2d(ids, [2, 3], 'int32')),
      tf.gather(tf.tensor2d(Int32Array.from({ length: 60 }, (_, i) => i), [10, 6], 'int32'), tf.tensor1d(ids, 'int32')),
      tf.gather(tf.tensor2d(x, [10, 6]), tf.tensor1d([5, 0, 2], 'int32'), 1),
    ]);
    for (let i = 0; i < 4; i++) expect(Array.from(ours[i]!)).toEqual(Array.from(stock[i]!));
  });
  it('rejects an out-of-range index', async () => {
    await on('cpu', () => expect(() => tf.gather(tf.tensor2d([1, 2, 3, 4], [2, 2]), tf.tensor1d([2], 'int32'))).toThrow(/not in \[0, 1\]/));
  });
});
