import { describe, it, expect } from 'vitest';
import { matmul, matmulSplitK, colSum, TILE_CANDIDATES, tileSharedBytes, tileThreads, createBuffer, toF16Bits, fromF16Bits, type MatmulParams, type TileConfig } from '../src/compiled/index.js';
import { compiledGpu, type Gpu, randn, expectClose, upload, readF32, gelu, geluGrad, guarded, readGuarded } from './compiled-helpers.js';

const gpu = await compiledGpu();

/** float64 reference of matmul's full contract (see matmul.ts). */
function reference(p: MatmulParams, A: Float32Array, B: Float32Array, o: { bias?: Float32Array; R?: Float32Array; F?: Float32Array; C0?: Float32Array }) {
  const { m: M, n: N, k: K } = p;
  const batch = p.batch ?? 1;
  const sA = p.strideA ?? M * K;
  const sB = p.strideB ?? K * N;
  const sC = p.strideC ?? M * N;
  const size = (batch - 1) * sC + M * N;
  const C = new Float64Array(size);
  const pre = new Float64Array(size);
  if (o.C0) C.set(o.C0);
  for (let z = 0; z < batch; z++) {
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let l = 0; l < K; l++) {
          const a = A[z * sA + (p.transA ? l * M + i : i * K + l)]!;
          const b = B[z * sB + (p.transB ? j * K + l : l * N + j)]!;
          s += a * b;
        }
        const ci = z * sC + i * N + j;
        let v = s * (p.alpha ?? 1);
        if (p.bias) v += o.bias![j]!;
        if (p.geluBackward) v *= geluGrad(o.F![ci]!);
        if (p.residual) v += o.R![ci]!;
        if (p.accumulate) v += o.C0![ci]!;
        pre[ci] = v;
        C[ci] = p.gelu && p.gelu !== 'none' ? gelu(v) : v;
      }
    }
  }
  return { C, pre };
}

async function check(p: MatmulParams, seed = 1, on: Gpu = gpu!) {
  const { device, runner } = on;
  const batch = p.batch ?? 1;
  const sA = p.strideA ?? p.m * p.k;
  const sB = p.strideB ?? p.k * p.n;
  const sC = p.strideC ?? p.m * p.n;
  const nA = (batch - 1) * sA + p.m * p.k;
  const nB = (batch - 1) * sB + p.k * p.n;
  const nC = (batch - 1) * sC + p.m * p.n;
  let A = randn(nA, seed);
  let B = randn(nB, seed + 1);
  const f16 = p.dtype === 'f16';
  if (f16) {
    // the reference sees the f16-rounded inputs
    A = A.map((x) => fromF16Bits(toF16Bits(x)));
    B = B.map((x) => fromF16Bits(toF16Bits(x)));
  }
  const bias = randn(p.n, seed + 2);
  const R = randn(nC, seed + 3);
  const F = randn(nC, seed + 4, 2);
  const C0 = randn(nC, seed + 5);
  const spec = matmul(p);
  const asF16 = (x: Float32Array) => {
    const h = new Uint16Array(x.length + (x.length % 2));
    x.forEach((v, i) => (h[i] = toF16Bits(v)));
    return h;
  };
  // every operand bound as a sub-range between NaN guards (see guarded)
  const bufs = {
    A: guarded(device, f16 ? asF16(A) : A),
    B: guarded(device, f16 ? asF16(B) : B),
    bias: guarded(device, bias),
    R: guarded(device, R),
    F: guarded(device, F),
    C: guarded(device, p.accumulate ? C0 : nC),
    pre: guarded(device, nC),
  };
  await runner.run([spec, bufs]);
  const want = reference(p, A, B, { bias, R, F, C0 });
  // fp32 accumulation of K products of unit normals: error grows ~ sqrt(K)·2^-24·|terms|; 1e-5·K
  // bounds it generously (f16 inputs are rounded identically in the reference, so the same bound).
  const atol = 1e-5 * p.k + 1e-5;
  // only the elements of the batches' C blocks (strides may leave gaps the kernel must not touch)
  const written = (x: ArrayLike<number>) => Array.from({ length: batch }, (_, z) => Array.from(x).slice(z * sC, z * sC + p.m * p.n)).flat();
  const got = await readGuarded(device, bufs.C, nC);
  expectClose(written(got), written(want.C), spec.label, atol, 1e-5);
  if (p.gelu === 'both') expectClose(written(await readGuarded(device, bufs.pre, nC)), written(want.pre), `${spec.label} pre`, atol, 1e-5);
  Object.values(bufs).forEach((b) => b.buffer.destroy());
}

const SMALL: TileConfig = { bm: 32, bn: 32, bk: 8, tm: 4, tn: 4 };
const MID: TileConfig = { bm: 64, bn: 64, bk: 16, tm: 8, tn: 4 };
const BIG: TileConfig = { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 };

describe.skipIf(!gpu)('compiled matmul (float64 reference)', () => {
  for (const [transA, transB] of [
    [false, false],
    [false, true],
    [true, false],
    [true, true],
  ] as const) {
    const lay = `${transA ? 'T' : 'N'}${transB ? 'T' : 'N'}`;
    it(`${lay}: odd shape 37x70x19 (scalar loads, edge tiles, K tail)`, async () => {
      await check({ m: 37, n: 70, k: 19, transA, transB, tile: SMALL });
    });
    it(`${lay}: vec4 shape 68x136x36 (vec4 loads, edge tiles, K tail)`, async () => {
      await check({ m: 68, n: 136, k: 36, transA, transB, tile: MID });
    });
  }

  it('128x128 tiles (8x8 per invocation) on an exact and a ragged shape', async () => {
    await check({ m: 128, n: 256, k: 64, tile: BIG });
    await check({ m: 130, n: 132, k: 20, transB: true, tile: BIG }, 3);
  });

  it('bias + gelu (pre-activation and activation written)', async () => {
    await check({ m: 37, n: 70, k: 19, bias: true, gelu: 'both', tile: SMALL });
    await check({ m: 64, n: 72, k: 32, bias: true, gelu: 'act', transB: true, tile: SMALL });
  });

  it('gelu-backward epilogue: C = (A·B) ⊙ gelu\'(F)', async () => {
    await check({ m: 37, n: 70, k: 19, geluBackward: true, transB: true, tile: SMALL });

  });

  it('residual, accumulate and alpha', async () => {
    await check({ m: 37, n: 70, k: 19, residual: true, bias: true, tile: SMALL });
    await check({ m: 37, n: 70, k: 19, accumulate: true, transA: true, alpha: 0.5, tile: SMALL });
  });

  it('batched with strides (strided heads, broadcast B)', async () => {
    await check({ m: 21, n: 18, k: 12, batch: 3, tile: SMALL });
    await check({ m: 20, n: 16, k: 12, batch: 3, strideA: 20 * 12 + 4, strideC: 20 * 16 + 8, tile: SMALL }, 5);
    await check({ m: 33, n: 24, k: 8, batch: 2, strideB: 0, transB: true, tile: SMALL }, 9);
  });

  it('default tile selection on a small and a larger shape', async () => {
    await check({ m: 5, n: 3, k: 2 });
    await check({ m: 256, n: 200, k: 48, bias: true });
  });

  it('f16 inputs, f32 accumulation (shader-f16)', async (ctx) => {
    if (!gpu!.f16) ctx.skip();
    await check({ m: 37, n: 70, k: 19, dtype: 'f16', tile: SMALL });
    await check({ m: 68, n: 136, k: 36, dtype: 'f16', transB: true, bias: true, tile: SMALL });
  });

  it('every autotuning candidate is correct on a ragged shape (device limits raised where it allows)', async () => {
    const big = await compiledGpu({ maxLimits: true });
    const lim = big!.device.limits;
    let ran = 0;
    for (const [i, tile] of TILE_CANDIDATES.entries()) {
      if (tileThreads(tile) > lim.maxComputeInvocationsPerWorkgroup || tileSharedBytes(tile) > lim.maxComputeWorkgroupStorageSize) continue;
      // layouts rotate through NN, NT, TN, TT; the shape has edge tiles in M and N and a K tail
      const t0 = performance.now();
      await check({ m: 150, n: 140, k: 44, transA: i % 4 >= 2, transB: i % 2 === 1, tile }, 20 + i, big!);
      console.log(`candidate ${JSON.stringify(tile)}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      ran++;
    }
    expect(ran, 'candidates the device could run').toBeGreaterThanOrEqual(TILE_CANDIDATES.length - 2);
    big!.device.destroy();
  }, 900_000);

  it('rejects invalid tile configs', () => {
    expect(() => matmul({ m: 8, n: 8, k: 8, tile: { bm: 32, bn: 32, bk: 6, tm: 4, tn: 4 } })).toThrow(/invalid matmul tile/);
  });

  it('equal code gives equal keys, different code different keys', () => {
    expect(matmul({ m: 8, n: 8, k: 8 }).key).toBe(matmul({ m: 8, n: 8, k: 8 }).key);
    expect(matmul({ m: 8, n: 8, k: 8 }).key).not.toBe(matmul({ m: 8, n: 8, k: 9 }).key);
  });
});

describe.skipIf(!gpu)('compiled matmulSplitK (weight gradient)', () => {
  it('C += Aᵀ·B over 4 K chunks (40x36 over K = 96) vs float64', async () => {
    const { device, runner } = gpu!;
    const [M, N, K, S] = [40, 36, 96, 4];
    const A = randn(K * M, 91);
    const B = randn(K * N, 92);
    const C0 = randn(M * N, 93);
    const sk = matmulSplitK({ m: M, n: N, k: K, splits: S, accumulate: true, tile: SMALL });
    const bufs = { A: guarded(device, A), B: guarded(device, B), part: guarded(device, sk.scratchFloats), C: guarded(device, C0) };
    await runner.run([sk.partial, [bufs.A, bufs.B, bufs.part]], [sk.reduce, [bufs.part, bufs.C]]);
    const want = new Float64Array(M * N);
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = C0[i * N + j]!;
        for (let l = 0; l < K; l++) s += A[l * M + i]! * B[l * N + j]!;
        want[i * N + j] = s;
      }
    }
    expectClose(await readGuarded(device, bufs.C, M * N), want, 'splitK', 1e-5 * K, 1e-5);
    expect(() => matmulSplitK({ m: 4, n: 4, k: 10, splits: 4 })).toThrow(/divide/);
  });
});

describe.skipIf(!gpu)('compiled colSum (bias gradient)', () => {
  for (const [m, n, acc] of [
    [37, 70, false],
    [600, 5, true],
  ] as const) {
    it(`${m}x${n}${acc ? ' accumulate' : ''}`, async () => {
      const { device, runner } = gpu!;
      const X = randn(m * n, 11);
      const out0 = randn(n, 12);
      const cs = colSum({ m, n, accumulate: acc, rowsPerChunk: 64 });
      const Xb = upload(device, X);
      const part = createBuffer(device, cs.scratchFloats * 4);
      const out = acc ? upload(device, out0) : createBuffer(device, n * 4);
      await runner.run([cs.partial, [Xb, part]], [cs.reduce, [part, out]]);
      const want = new Float64Array(n);
      for (let j = 0; j < n; j++) {
        let s = acc ? out0[j]! : 0;
        for (let i = 0; i < m; i++) s += X[i * n + j]!;
        want[j] = s;
      }
      // sums of up to 600 unit normals in f32: error well under 1e-4
      expectClose(await readF32(device, out, n), want, 'colSum', 1e-4, 1e-5);
      // deterministic: a second run gives identical bits
      const first = await readF32(device, out, n);
      if (!acc) {
        await runner.run([cs.partial, [Xb, part]], [cs.reduce, [part, out]]);
        expect(Array.from(await readF32(device, out, n))).toEqual(Array.from(first));
      }
    });
  }
});
