import { describe, it, expect } from 'vitest';
import {
  embeddingForward,
  embeddingBackward,
  positionBackward,
  embeddingCsr,
  blockSparseForward,
  blockSparseDx,
  blockSparseDw,
  adamw,
  adamwUniform,
  decayBits,
  gradNorm,
  fill,
  copy,
  add,
  accumulate,
  scale,
  createBuffer,
  uploadUniform,
  withWritableInputs,
} from '../src/compiled/index.js';
import { compiledGpu, randn, randInt, expectClose, upload, readF32 } from './compiled-helpers.js';

const gpu = await compiledGpu();

describe.skipIf(!gpu)('compiled embedding', () => {
  for (const [K, positions, acc] of [
    [1, true, false],
    [3, false, true],
  ] as const) {
    it(`K ${K}${positions ? ', learned positions' : ''}${acc ? ', dE accumulated (tied head)' : ''}: forward, CSR scatter-add backward, positions backward`, async () => {
      const { device, runner } = gpu!;
      const [R, T, D, V] = [3, 5, 70, 11];
      const ids = randInt(R * T * K, 41, V);
      ids[0] = ids[1] = 4; // repeated ids
      const E = randn(V * D, 42);
      const pos = randn(T * D, 43);
      const dx = randn(R * T * D, 44);
      const dE0 = randn(V * D, 45);
      const f = embeddingForward({ rows: R, t: T, d: D, vocab: V, k: K, positions });
      const b = embeddingBackward({ rows: R, t: T, d: D, vocab: V, k: K, accumulate: acc });
      const pb = positionBackward({ rows: R, t: T, d: D });
      const csr = embeddingCsr(ids, V);
      const bufs = {
        ids: upload(device, ids),
        table: upload(device, E),
        pos: upload(device, pos),
        x: createBuffer(device, R * T * D * 4),
        offsets: upload(device, csr.offsets),
        positions: upload(device, csr.positions),
        dx: upload(device, dx),
        dE: acc ? upload(device, dE0) : createBuffer(device, V * D * 4),
        dpos: createBuffer(device, T * D * 4),
      };
      await runner.run([f, bufs], [b, bufs], [pb, bufs]);
      const x = new Float64Array(R * T * D);
      const dE = new Float64Array(V * D);
      if (acc) dE.set(dE0);
      const dpos = new Float64Array(T * D);
      for (let row = 0; row < R * T; row++) {
        for (let c = 0; c < D; c++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += E[ids[row * K + k]! * D + c]!;
          x[row * D + c] = s / K + (positions ? pos[(row % T) * D + c]! : 0);
          for (let k = 0; k < K; k++) dE[ids[row * K + k]! * D + c] += dx[row * D + c]! / K;
          dpos[(row % T) * D + c] += dx[row * D + c]!;
        }
      }
      expectClose(await readF32(device, bufs.x, R * T * D), x, 'x', 1e-6, 1e-6);
      expectClose(await readF32(device, bufs.dE, V * D), dE, 'dE', 1e-5, 1e-5);
      expectClose(await readF32(device, bufs.dpos, T * D), dpos, 'dpos', 1e-5, 1e-5);
    });
  }

  it('embeddingCsr lists each id\'s positions in ascending order', () => {
    const csr = embeddingCsr(Int32Array.from([2, 0, 2, 1, 2]), 4);
    expect(Array.from(csr.offsets)).toEqual([0, 1, 2, 5, 5]);
    expect(Array.from(csr.positions)).toEqual([1, 3, 0, 2, 4]);
    expect(() => embeddingCsr(Int32Array.from([4]), 4)).toThrow(/outside/);
  });
});

describe.skipIf(!gpu)('compiled block-sparse matmul', () => {
  for (const b of [4, 8]) {
    it(`block ${b}: y = x(w⊙M) + bias, dx = dy(w⊙M)ᵀ, dw = (xᵀdy)⊙M (accumulated) vs float64`, async () => {
      const { device, runner } = gpu!;
      const [M, K, N] = [37, 4 * b, 3 * b];
      const x = randn(M * K, 51);
      const w = randn(K * N, 52);
      const dy = randn(M * N, 53);
      const bias = randn(N, 54);
      const dw0 = randn(K * N, 55);
      const mask = Int32Array.from({ length: (K / b) * (N / b) }, (_, i) => (i % 3 === 1 ? 0 : 1));
      const keep = (r: number, c: number) => mask[Math.floor(r / b) * (N / b) + Math.floor(c / b)] !== 0;
      const p = { rows: M, k: K, n: N, blockSize: b };
      const bufs = {
        x: upload(device, x),
        w: upload(device, w),
        mask: upload(device, mask),
        bias: upload(device, bias),
        y: createBuffer(device, M * N * 4),
        dy: upload(device, dy),
        dx: createBuffer(device, M * K * 4),
        dw: upload(device, dw0),
      };
      await runner.run(
        [blockSparseForward({ ...p, bias: true }), [bufs.x, bufs.w, bufs.mask, bufs.bias, bufs.y]],
        [blockSparseDx(p), [bufs.dy, bufs.w, bufs.mask, bufs.dx]],
        [blockSparseDw({ ...p, accumulate: true }), [bufs.x, bufs.dy, bufs.mask, bufs.dw]],
      );
      const y = new Float64Array(M * N);
      const dx = new Float64Array(M * K);
      const dw = Float64Array.from(dw0);
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          let s = bias[n]!;
          for (let k = 0; k < K; k++) if (keep(k, n)) s += x[m * K + k]! * w[k * N + n]!;
          y[m * N + n] = s;
        }
        for (let k = 0; k < K; k++) {
          let s = 0;
          for (let n = 0; n < N; n++) if (keep(k, n)) s += dy[m * N + n]! * w[k * N + n]!;
          dx[m * K + k] = s;
        }
      }
      for (let k = 0; k < K; k++) {
        for (let n = 0; n < N; n++) {
          if (!keep(k, n)) continue;
          for (let m = 0; m < M; m++) dw[k * N + n] += x[m * K + k]! * dy[m * N + n]!;
        }
      }
      expectClose(await readF32(device, bufs.y, M * N), y, 'y', 1e-4, 1e-5);
      expectClose(await readF32(device, bufs.dx, M * K), dx, 'dx', 1e-4, 1e-5);
      expectClose(await readF32(device, bufs.dw, K * N), dw, 'dw', 1e-4, 1e-5);
      // without accumulation, masked blocks of dw are exact zeros
      const dwBuf = createBuffer(device, K * N * 4);
      await runner.run([blockSparseDw(p), [bufs.x, bufs.dy, bufs.mask, dwBuf]]);
      const dwPlain = await readF32(device, dwBuf, K * N);
      for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) if (!keep(k, n)) expect(dwPlain[k * N + n]).toBe(0);
    });
  }
});

/** optim.ts's update in float64 (per element), given the f32 step uniform. */
function adamwRef(w: number, g: number, m: number, v: number, sc: number, o: { beta1: number; beta2: number; eps: number }, u: Float32Array, decays: boolean) {
  const gs = g * sc;
  const m1 = m * o.beta1 + gs * (1 - o.beta1);
  const v1 = v * o.beta2 + gs * gs * (1 - o.beta2);
  const w0 = decays ? w * u[2]! : w;
  return [w0 - (m1 / (Math.sqrt(v1 / u[1]!) + o.eps)) * u[0]!, m1, v1] as const;
}

describe.skipIf(!gpu)('compiled optimizer', () => {
  it('gradNorm: norm and clip scale of a flat buffer (two-stage, deterministic), clipping on and off', async () => {
    const { device, runner } = gpu!;
    const n = 70_001;
    const g = randn(n, 61, 0.01);
    const gb = upload(device, g);
    const want = Math.sqrt(g.reduce((s, x) => s + x * x, 0));
    for (const clip of [1, 0]) {
      const gn = gradNorm({ n, gradClip: clip, chunk: 4096 });
      const part = createBuffer(device, gn.scratchFloats * 4);
      const out = createBuffer(device, 16);
      await runner.run([gn.partial, [gb, part]], [gn.reduce, [part, out]]);
      const got = await readF32(device, out, 2);
      expectClose([got[0]!], [want], 'norm', 1e-6, 1e-5);
      expectClose([got[1]!], [clip > 0 ? Math.min(1, clip / (want + 1e-6)) : 1], 'scale', 1e-7, 1e-5);
      expect(want).toBeGreaterThan(1); // so clipping is active in the first case
    }
  });

  it('adamw over a flat buffer: decay bits, clip scale from the GPU, masked weights and moments stay zero', async () => {
    const { device, runner } = gpu!;
    const o = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
    const n = 64 * 5 + 17; // granules: 0 decays, 1 not, 2-3 decay, 4-5 not
    const bits = decayBits(n, [
      [0, 64],
      [128, 256],
    ]);
    const w = randn(n, 71);
    const g = randn(n, 72);
    const m = randn(n, 73, 0.1);
    const v = randn(n, 74, 0.1).map(Math.abs);
    const mask = Float32Array.from({ length: n }, (_, i) => (i % 5 === 2 ? 0 : 1));
    const clip = Float32Array.from([3.0, 0.7, 0, 0]);
    const u = adamwUniform(o, 3e-3, 7);
    for (const masked of [false, true]) {
      const bufs = {
        w: upload(device, w),
        g: upload(device, g),
        m: upload(device, m),
        v: upload(device, v),
        decay: upload(device, bits),
        clip: upload(device, clip),
        step: uploadUniform(device, u),
        mask: upload(device, mask),
      };
      await runner.run([adamw({ ...o, n, masked }), bufs]);
      const want = [new Float64Array(n), new Float64Array(n), new Float64Array(n)];
      for (let i = 0; i < n; i++) {
        const decays = [0, 2, 3].includes(Math.floor(i / 64));
        const r = adamwRef(w[i]!, g[i]!, m[i]!, v[i]!, 0.7, o, u, decays);
        const k = masked ? mask[i]! : 1;
        for (let j = 0; j < 3; j++) want[j]![i] = r[j]! * k;
      }
      const [gw, gm, gv] = [await readF32(device, bufs.w, n), await readF32(device, bufs.m, n), await readF32(device, bufs.v, n)];
      // one f32 update: a few ulps
      expectClose(gw, want[0]!, `w${masked ? ' masked' : ''}`, 1e-6, 1e-5);
      expectClose(gm, want[1]!, 'm', 1e-7, 1e-5);
      expectClose(gv, want[2]!, 'v', 1e-7, 1e-5);
      if (masked) for (let i = 2; i < n; i += 5) expect([gw[i], gm[i], gv[i]], `element ${i}`).toEqual([0, 0, 0]);
    }
  });

  it('adamwUniform: stepSize = lr / (1 − β1^t), bc2 = 1 − β2^t, decay = 1 − lr·wd', () => {
    const u = adamwUniform({ beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 }, 0.01, 2);
    expect(u[0]).toBeCloseTo(0.01 / (1 - 0.81), 6);
    expect(u[1]).toBeCloseTo(1 - 0.9801, 6);
    expect(u[2]).toBeCloseTo(0.999, 6);
    expect(() => decayBits(100, [[10, 20]])).toThrow(/aligned/);
  });
});

describe.skipIf(!gpu)('compiled elementwise helpers', () => {
  it('fill, copy, add, accumulate, scale', async () => {
    const { device, runner } = gpu!;
    const n = 1000;
    const a = randn(n, 81);
    const b = randn(n, 82);
    const bufs = { a: upload(device, a), b: upload(device, b), out: createBuffer(device, n * 4) };
    await runner.run([add({ n }), bufs]);
    expectClose(await readF32(device, bufs.out, n), Array.from(a, (x, i) => x + b[i]!), 'add', 1e-6, 1e-6);
    await runner.run([accumulate({ n }), { x: bufs.a, out: bufs.out }]);
    expectClose(await readF32(device, bufs.out, n), Array.from(a, (x, i) => 2 * x + b[i]!), 'accumulate', 1e-6, 1e-6);
    await runner.run([scale({ n, alpha: -0.5 }), { x: bufs.b, out: bufs.out }]);
    expectClose(await readF32(device, bufs.out, n), Array.from(b, (x) => -0.5 * x), 'scale', 1e-7, 1e-6);
    await runner.run([copy({ n }), { x: bufs.a, out: bufs.out }]);
    expectClose(await readF32(device, bufs.out, n), a, 'copy', 0, 0);
    // bound to the first n - 1 elements (poison also fills just the bound range)
    await runner.run([fill({ n: n - 1, value: 2.5 }), { out: { buffer: bufs.out, size: (n - 1) * 4 } }]);
    const got = await readF32(device, bufs.out, n);
    expect(got[n - 2]).toBe(2.5);
    expect(got[n - 1]).toBe(a[n - 1]); // only n - 1 elements were filled
  });

  it('withWritableInputs: inputs and output as disjoint ranges of one arena buffer', async () => {
    const { device, runner } = gpu!;
    const n = 300; // 1200 bytes: ranges at 0, 1280, 2560 (256-byte aligned)
    const arena = new Float32Array(3 * 320);
    const a = randn(n, 83);
    const b = randn(n, 84);
    arena.set(a, 0);
    arena.set(b, 320);
    const buf = upload(device, arena);
    const spec = withWritableInputs(add({ n }));
    expect(spec.bindings.every((x) => x.access === 'read_write')).toBe(true);
    expect(spec.key).not.toBe(add({ n }).key);
    await runner.run([spec, [{ buffer: buf, offset: 0, size: n * 4 }, { buffer: buf, offset: 1280, size: n * 4 }, { buffer: buf, offset: 2560, size: n * 4 }]]);
    expectClose(await readF32(device, buf, n, 2560), Array.from(a, (x, i) => x + b[i]!), 'arena add', 1e-6, 1e-6);
  });
});

describe.skipIf(!gpu)('compile trace', () => {
  it('PATCHFLOW_GPU_LOG=1 names each kernel as it compiles and when it is done; a cached kernel compiles once', async () => {
    const { device } = gpu!;
    const { KernelRunner } = await import('../src/compiled/index.js');
    const runner = new KernelRunner(device);
    const lines: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    const saved = process.env.PATCHFLOW_GPU_LOG;
    process.env.PATCHFLOW_GPU_LOG = '1';
    process.stderr.write = ((s: string | Uint8Array) => (lines.push(String(s)), true)) as typeof process.stderr.write;
    try {
      const spec = fill({ n: 37, value: 2 });
      await runner.pipelineAsync(spec);
      await runner.pipelineAsync(spec);
    } finally {
      process.stderr.write = write;
      if (saved === undefined) delete process.env.PATCHFLOW_GPU_LOG;
      else process.env.PATCHFLOW_GPU_LOG = saved;
    }
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^\[gpu\] compiling fill/);
    expect(lines[1]).toMatch(/^\[gpu\] compiled fill.* in \d+ ms\n$/);
  });
});
