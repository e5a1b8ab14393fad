/**
 * f16 mixed precision (precision: 'f16'), on whatever adapter the tests get (lavapipe in CI: shader-f16
 * but no subgroup matrices, so the f16 matmuls run on the shader-f16 fallback kernels; the
 * subgroup-matrix kernels are checked on the GPU by tools/device/f16_matmul_check.ts, and here only
 * where the adapter has them).
 *
 * Tolerances: the kernels multiply f16 values, so a product is exact in f32 and adds only the f32
 * accumulation error, ≲ 2K·2⁻²⁴·Σ|a·b|. B is uploaded as f16 (rounded to nearest here); A is f32,
 * rounded by the shader's f32→f16 conversion, whose rounding WGSL leaves to the implementation (to
 * nearest, or towards zero: lavapipe), so its relative error is at most 2u with u = 2⁻¹¹. Against the
 * float64 product of B's f16 values and A's exact values: |err| ≤ (2u + 2u²)·Σ|a·b| + accumulation,
 * plus the f32 epilogue's own error (tanh in gelu / gelu'), and the error must exceed the
 * accumulation bound somewhere (or A was not rounded).
 */
import { describe, expect, it } from 'vitest';
import '@patchflow/patch-training';
import '@patchflow/sparsity';
import { resolveConfig, tokenBatch, tokenLayout, train, type Batch, type TrainEvent } from '@patchflow/trainer';
import { whaleText } from '@patchflow/test-fixtures';
import { castF16, defaultSgTile, fromF16Bits, matmul, matmulSubgroup, sgTileSharedBytes, toF16Bits, type MatmulParams } from '../src/compiled/index.js';
import { compileWebGpuStep, f16Support, getComputeDevice, gpuBench, type WebGpuCompiledStep } from '../src/index.js';
import { compiledGpu, tinyPhase, guarded, readGuarded, randn, readF32, upload, gelu, geluGrad } from './compiled-helpers.js';

const gpu = await compiledGpu();
const F16_U = 2 ** -11;
const round16 = (x: number) => fromF16Bits(toF16Bits(x));

/** float64 C = op(A)·op(B) (+ epilogue), and Σ|a·b| per element (for the error bounds). */
function reference(p: MatmulParams, A: Float32Array, B: Float32Array, o: { bias?: Float32Array; R?: Float32Array; F?: Float32Array; C0?: Float32Array }) {
  const { m: M, n: N, k: K } = p;
  const C = new Float64Array(M * N);
  const mag = new Float64Array(M * N);
  const raw = new Float64Array(M * N); // Σ|a·b| before the epilogue
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      let a1 = 0;
      for (let l = 0; l < K; l++) {
        const a = A[p.transA ? l * M + i : i * K + l]!;
        const b = B[p.transB ? j * K + l : l * N + j]!;
        s += a * b;
        a1 += Math.abs(a * b);
      }
      const ci = i * N + j;
      let v = s;
      let d = 1; // derivative of the epilogue wrt s (bounds the propagated error)
      if (p.bias) v += o.bias![j]!;
      if (p.geluBackward) {
        const g = geluGrad(o.F![ci]!);
        v *= g;
        d *= Math.abs(g);
      }
      if (p.residual) v += o.R![ci]!;
      if (p.accumulate) v += o.C0![ci]!;
      C[ci] = p.gelu && p.gelu !== 'none' ? gelu(v) : v;
      raw[ci] = a1;
      mag[ci] = a1 * d * (p.gelu && p.gelu !== 'none' ? 1.2 : 1); // |gelu'| ≤ 1.13
    }
  }
  return { C, mag, raw };
}

const asF16 = (x: Float32Array) => {
  const h = new Uint16Array(x.length + (x.length % 2));
  x.forEach((v, i) => (h[i] = toF16Bits(v)));
  return h;
};

/**
 * Runs one f16 matmul: A f32 (rounded on load), B an f16 "weight copy" starting `offB` elements into
 * its binding. Returns the result with the rounded and unrounded references.
 */
async function runMixed(p: MatmulParams, kernel: 'fallback' | 'sgmat', seed = 3) {
  const { device, runner } = gpu!;
  const A = randn(p.m * p.k, seed);
  const B = randn(p.k * p.n, seed + 1);
  const offB = 64;
  const Bpadded = new Float32Array(offB + B.length).fill(1e4); // wrong values before the operand: an offset bug shows
  Bpadded.set(B, offB);
  const bias = randn(p.n, seed + 2);
  const R = randn(p.m * p.n, seed + 3);
  const F = randn(p.m * p.n, seed + 4, 2);
  const C0 = randn(p.m * p.n, seed + 5);
  const params = { ...p, aType: 'f32' as const, bType: 'f16' as const, offsetB: offB };
  const spec = kernel === 'sgmat' ? matmulSubgroup({ ...params, sgTile: { wm: 2, wn: 1, rt: 1, ct: 2, bk: 32 } }) : matmul({ ...params, roundF16: true });
  const bufs = {
    A: guarded(device, A),
    B: guarded(device, asF16(Bpadded)),
    bias: guarded(device, bias),
    R: guarded(device, R),
    F: guarded(device, F),
    C: guarded(device, p.accumulate ? C0 : p.m * p.n),
    pre: guarded(device, p.m * p.n),
  };
  await runner.run([spec, bufs]);
  const got = await readGuarded(device, bufs.C, p.m * p.n);
  const o = { bias, R, F, C0 };
  const exact = reference(p, A, B.map(round16), o);
  return { got, exact, spec };
}

/** Checks `got` against both references with the bounds of the file comment. */
function checkBounds(p: MatmulParams, r: Awaited<ReturnType<typeof runMixed>>) {
  let worst = 0;
  let roundingSeen = false;
  for (let i = 0; i < r.got.length; i++) {
    const accTol = 2 * p.k * 2 ** -24 * r.exact.mag[i]! + 1e-6;
    const e = Math.abs(r.got[i]! - r.exact.C[i]!);
    // plus the f32 epilogue: gelu and gelu' use the shader's tanh (~1e-6 relative error here)
    const epiTol = (p.gelu && p.gelu !== 'none') || p.geluBackward ? 4e-6 * (r.exact.raw[i]! + Math.abs(r.exact.C[i]!)) : 0;
    const tol = (2 * F16_U + 2 * F16_U ** 2) * r.exact.mag[i]! + accTol + epiTol;
    if (!(e <= tol)) expect.fail(`element ${i}: got ${r.got[i]}, reference ${r.exact.C[i]} (f16 rounding bound ${tol})`);
    worst = Math.max(worst, e / tol);
    if (e > 4 * accTol) roundingSeen = true;
  }
  expect(roundingSeen, 'the result matches the unrounded product to f32 accuracy: A was not rounded to f16').toBe(true);
  return worst;
}

const LAYOUTS = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
] as const;

describe.skipIf(!gpu?.f16)('f16 matmul kernels (shader-f16 fallback) vs float64', () => {
  for (const [transA, transB] of LAYOUTS) {
    it(`${transA ? 'T' : 'N'}${transB ? 'T' : 'N'} 37x44x29 and 64x64x96, f16 weight copy at an offset, with epilogues`, async () => {
      const p1: MatmulParams = { m: 37, n: 44, k: 29, transA, transB, bias: true, residual: true };
      checkBounds(p1, await runMixed(p1, 'fallback'));
      const p2: MatmulParams = { m: 64, n: 64, k: 96, transA, transB, geluBackward: true, accumulate: true };
      checkBounds(p2, await runMixed(p2, 'fallback', 7));
    });
  }
  it('gelu epilogue writes pre and gelu(pre)', async () => {
    const p: MatmulParams = { m: 32, n: 48, k: 40, gelu: 'both', bias: true };
    checkBounds(p, await runMixed(p, 'fallback', 11));
  });

  it('castF16 rounds to nearest f16 (ties, subnormals, overflow to inf)', async () => {
    const { device, runner } = gpu!;
    const x = new Float32Array(64);
    const special = [0, -0, 1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 65520, 1e6, -1e6, 2 ** -20, 5.96e-8, 3.14159, -2.71828];
    x.set(special);
    for (let i = special.length; i < 64; i++) x[i] = Math.sin(i * 1.7) * 10 ** ((i % 9) - 4);
    const w = upload(device, x);
    const out = device.createBuffer({ size: 128, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    await runner.run([castF16({ n: 64 }), { w, out }]);
    const bits = new Uint16Array((await readF32(device, out, 32)).buffer);
    for (let i = 0; i < 64; i++) {
      const want = toF16Bits(x[i]!);
      // one f16 ulp of slack for the driver's rounding of values that are not exactly representable
      const got = fromF16Bits(bits[i]!);
      const ref = fromF16Bits(want);
      if (!Number.isFinite(ref)) expect(got, `cast of ${x[i]}`).toBe(ref);
      else expect(Math.abs(got - ref), `cast of ${x[i]}`).toBeLessThanOrEqual(Math.abs(x[i]!) * F16_U * 2 + 2 ** -24);
    }
  });
});

const sgOk = !!gpu && (gpu.device.features as Set<string>).has('chromium-experimental-subgroup-matrix');
describe.skipIf(!sgOk)('f16 matmul kernels on subgroup matrices vs float64', () => {
  for (const [transA, transB] of LAYOUTS) {
    it(`${transA ? 'T' : 'N'}${transB ? 'T' : 'N'} 37x44x29 with epilogues`, async () => {
      const p: MatmulParams = { m: 37, n: 44, k: 29, transA, transB, bias: true, residual: true };
      checkBounds(p, await runMixed(p, 'sgmat'));
    });
  }
});

describe('subgroup-matrix kernel generator (no GPU needed)', () => {
  it('same bindings as the fp32 matmul, workgroups of whole subgroups, both spellings of majorness', () => {
    const p: MatmulParams = { m: 100, n: 76, k: 72, transA: true, bias: true, gelu: 'both', aType: 'f32', bType: 'f16', offsetB: 64 };
    const fp = matmul({ ...p, roundF16: true });
    const sg = matmulSubgroup({ ...p, sgTile: { wm: 2, wn: 2, rt: 2, ct: 2, bk: 32 }, subgroupSize: 32 });
    expect(sg.bindings).toEqual(fp.bindings);
    expect(sg.workgroups).toEqual([2, 2, 1]);
    expect(sg.code).toMatch(/@compute @workgroup_size\(128\)/);
    expect(sg.code).toMatch(/^enable f16;\nenable subgroups;\nenable chromium_experimental_subgroup_matrix;\ndiagnostic\(off, chromium.subgroup_matrix_uniformity\);/);
    // A [K, M] is staged as stored and loaded column-major; B [K, N] row-major
    expect(sg.code).toContain('subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, col_major>(&As, ');
    expect(sg.code).toContain('subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&Bs, ');
    expect(sg.code).not.toMatch(/, (true|false), \d+u\)/);
    const legacy = matmulSubgroup({ ...p, sgTile: { wm: 2, wn: 2, rt: 2, ct: 2, bk: 32 }, legacyMajorness: true });
    expect(legacy.code).toContain('subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&As, ');
    expect(legacy.code).toMatch(/subgroupMatrixStore\(&Cs, sg \* 256u, acc_0_0, false, 16u\)/);
    // the weight operand starts 64 elements into its binding
    expect(sg.code).toContain('+ 64u');
    expect(() => matmulSubgroup({ ...p, subgroupSize: 12 })).toThrow(/subgroup size 12/);
  });

  it('default tiles: 128x64 only for large products with a long K', () => {
    expect(defaultSgTile(4096, 4096, 4096)).toMatchObject({ rt: 4, ct: 2 });
    expect(defaultSgTile(4096, 3072, 768)).toMatchObject({ rt: 2, ct: 2 });
    expect(sgTileSharedBytes({ wm: 2, wn: 2, rt: 4, ct: 2, bk: 32 })).toBeLessThanOrEqual(32768);
  });
});

describe('f16 support report', () => {
  it('names what is missing', () => {
    expect(f16Support([]).reason).toBe('the adapter lacks shader-f16');
    expect(f16Support(['shader-f16']).reason).toBe('the adapter lacks chromium-experimental-subgroup-matrix');
    const cfg = { componentType: 'f16', resultComponentType: 'f32', M: 16, N: 16, K: 16 };
    const s = f16Support(['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'], { subgroupMatrixConfigs: [cfg], subgroupMaxSize: 32 });
    expect(s).toMatchObject({ shaderF16: true, subgroupMatrix: true, subgroupSize: 32, reason: '' });
    expect(f16Support(['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'], { subgroupMatrixConfigs: [{ ...cfg, M: 8 }], subgroupMaxSize: 32 }).reason).toMatch(/no f16xf16->f32 16x16x16/);
  });
});

// ---------------------------------------------------------------------------------------------------
// the compiled f16 step

const text = whaleText(400);
const cd = gpu ? await getComputeDevice('f16').catch(() => undefined) : undefined;
const stepOk = !!cd?.f16?.shaderF16;

const setup = (over: Record<string, unknown> = {}) => tinyPhase({}, { precision: 'f16', ...over });

function batchOf(rows: number, t: number, seed: number): Batch {
  const layout = tokenLayout(t);
  const windows = Int32Array.from({ length: rows * layout.windowTokens }, (_, i) => (i * 37 + seed * 101 + ((i * i) % 13)) % 256);
  return tokenBatch(windows, rows, layout);
}

async function compileF16(over: Record<string, unknown> = {}, lossScale?: { init?: number; growthInterval?: number }) {
  const s = await setup(over);
  const step = await compileWebGpuStep({ config: s.config, model: s.gpt, optimizer: s.optimizer, phase: s.phase, contribution: {} }, { poison: true, ...(lossScale ? { lossScale } : {}) });
  if ('reason' in step) throw new Error(step.reason);
  await step.load();
  return { ...s, step: step as WebGpuCompiledStep };
}

const stateOf = (step: WebGpuCompiledStep) => (step as unknown as { state: { read(s: string): Promise<Map<string, Float32Array>>; setLossScale(x: number): Promise<void>; lossScale(): Promise<Float32Array> } }).state;

describe.skipIf(!stepOk)('compiled f16 step', () => {
  it('gradients within f16 tolerance of the fp32 compiled step (loss scale divided out)', async () => {
    const a = await compileF16();
    const b = await setup({ precision: 'fp32' });
    const fp32 = await compileWebGpuStep({ config: b.config, model: b.gpt, optimizer: b.optimizer, phase: b.phase, contribution: {} }, { poison: true });
    if ('reason' in fp32) throw new Error(fp32.reason);
    await fp32.load();
    const batch = batchOf(3, 16, 1);
    const g16 = await a.step.gradients([batch]);
    const g32 = await fp32.gradients([batch]);
    expect(a.step.description).toMatch(/f16 mixed precision/);
    // f16-rounded matmul inputs: relative error ~ a few u = 2^-11 per layer
    expect(Math.abs(g16.loss - g32.loss)).toBeLessThan(5e-3);
    let worst = 0;
    for (const [n, ref] of g32.grads) {
      const got = g16.grads.get(n)!;
      let d = 0;
      let m = 0;
      for (let i = 0; i < ref.length; i++) {
        d = Math.max(d, Math.abs(got[i]! - ref[i]!));
        m = Math.max(m, Math.abs(ref[i]!));
      }
      worst = Math.max(worst, d / (m + 1e-20));
    }
    expect(worst).toBeLessThan(3e-2);
    expect(worst).toBeGreaterThan(0); // the f16 step really differs from fp32
    a.step.dispose();
    fp32.dispose();
    a.gpt.dispose();
    b.gpt.dispose();
  });

  it('an overflow skips the step (weights and moments unchanged) and halves the scale; clean steps grow it', async () => {
    const { step, gpt } = await compileF16({}, { growthInterval: 2, init: 1024 });
    const st = stateOf(step);
    const w0 = await st.read('param');
    const m0 = await st.read('m');
    // a scale that overflows f16 in the backward matmuls (and f32 nowhere else)
    await st.setLossScale(1e30);
    const r1 = await (await step.submit([batchOf(3, 16, 2)], 1e-3, 1)).done;
    expect(r1.skipped).toBe(true);
    expect(r1.lossScale).toBeCloseTo(5e29, -25);
    expect(r1.skippedSteps).toBe(1);
    expect(Number.isFinite(r1.loss)).toBe(true);
    const w1 = await st.read('param');
    const m1 = await st.read('m');
    for (const [n, w] of w0) {
      expect(w1.get(n), `${n} changed on a skipped step`).toEqual(w);
      expect(m1.get(n), `moment of ${n} changed on a skipped step`).toEqual(m0.get(n));
    }
    await st.setLossScale(256);
    const r2 = await (await step.submit([batchOf(3, 16, 3)], 1e-3, 1)).done;
    expect(r2).toMatchObject({ skipped: false, lossScale: 256, skippedSteps: 1 });
    expect(Number.isFinite(r2.gradNorm)).toBe(true);
    const w2 = await st.read('param');
    expect([...w2].some(([n, w]) => w.some((x, i) => x !== w0.get(n)![i]))).toBe(true);
    const r3 = await (await step.submit([batchOf(3, 16, 4)], 1e-3, 2)).done;
    expect(r3).toMatchObject({ skipped: false, lossScale: 512 }); // doubled after 2 clean steps
    step.dispose();
    gpt.dispose();
  });

  const base = { model: { nLayer: 2, nHead: 2, dModel: 32, seqLen: 16 }, batchSize: 4, evalEvery: 0, evalBatches: 2, checkpointEvery: 0, backend: 'webgpu' };
  const run = async (over: Record<string, unknown>) => {
    const logs: string[] = [];
    const r = await train({ config: resolveConfig(base, over), corpus: { name: 't', text }, onEvent: (e: TrainEvent) => e.type === 'log' && logs.push(e.message) });
    const out = { losses: r.losses.map((l) => l.loss), val: r.valLoss, logs };
    r.model.dispose();
    return out;
  };

  // stated tolerance: over 60 steps of the tiny model, f16's final training loss (mean of the last 10
  // steps) and validation loss are within 2% of fp32's
  for (const [label, over] of [
    ['dense', { steps: 60 }],
    ['patch-level K=4 on half the tokens', { steps: 60, plugins: { patch: { patchSize: 4, fraction: 0.5 } } }],
    ['block-sparse 75% (block 16; its matmuls stay fp32), gradient accumulation 2', { steps: 60, gradAccum: 2, plugins: { sparsity: { sparsity: 0.75, pattern: 'block:16' } } }],
  ] as const) {
    it(`training, ${label}: f16 within 2% of fp32`, async () => {
      const f16 = await run({ ...over, precision: 'f16' });
      const fp32 = await run({ ...over, precision: 'fp32' });
      expect(f16.logs.some((l) => /compiled step on webgpu: f16 mixed precision/.test(l))).toBe(true);
      const tail = (l: number[]) => l.slice(-10).reduce((a, b) => a + b, 0) / 10;
      expect(Math.abs(tail(f16.losses) - tail(fp32.losses)) / tail(fp32.losses)).toBeLessThan(0.02);
      expect(Math.abs(f16.val - fp32.val) / fp32.val).toBeLessThan(0.02);
      expect(fp32.losses.at(-1)!).toBeLessThan(fp32.losses[0]! - 0.5);
    });
  }

  it('bench gpu reports the compiled f16 step and the f16 matmul', async () => {
    const r = await gpuBench({ shapes: [{ label: 'tiny', nLayer: 1, dModel: 32, nHead: 2, seqLen: 16, batch: 2 }], steps: 3, skipEager: true, matmulSize: 64, modelShapes: false });
    const row = r.rows[0]!;
    expect(row.compiledTokensPerSecond).toBeGreaterThan(0);
    expect(row.compiledF16TokensPerSecond).toBeGreaterThan(0);
    expect(row.f16LossScale).toBeGreaterThan(0);
    expect(r.matmul.f16Tflops4096).toBeGreaterThan(0);
    expect(r.matmul.f16Kernel).toBe(cd!.f16!.subgroupMatrix ? 'subgroup-matrix' : 'shader-f16');
    if (!cd!.f16!.subgroupMatrix) expect(r.matmul.f16Note).toMatch(/^f16 on the shader-f16 fallback kernels/);
  });

  it('precision f16 on the eager path or a CPU backend is an error before step 1', async () => {
    await expect(run({ steps: 2, precision: 'f16', compile: false })).rejects.toThrow(/precision 'f16' runs only on the compiled step/);
    await expect(run({ steps: 2, precision: 'f16', backend: 'cpu' })).rejects.toThrow(/precision 'f16' needs a backend with a compiled step \(webgpu\); backend "cpu" has none/);
    await expect(run({ steps: 2, precision: 'f16', plugins: { neftune: { alpha: 5 } } })).rejects.toThrow(/precision 'f16' runs only on a compiled step, and phase "train" cannot be compiled on webgpu: plugin "neftune" has no compiled form/);
  });
});
