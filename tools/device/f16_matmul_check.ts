// Device check of the f16 subgroup-matrix matmul (issue 12): for one sg tile variant (argv[2], an
// index into VARIANTS), compiles the kernel, checks it against a float64 reference in every
// transpose layout with the step's operand mix (A f32 rounded to f16 on load, B an f16 weight copy at
// an element offset) and the fp32 kernels' epilogues, then times f16 x f16 -> f32 at 4096^3 and at the
// 12L d768 T512 B8 step's shapes. One variant per process, so that the caller can put a time limit on
// each (a driver may hang compiling a large shader). Prints one JSON line.
//
// Bundle (repo root):
//   npx esbuild tools/device/f16_matmul_check.ts --bundle --platform=node --format=esm --target=node20 \
//     --external:webgpu --outfile=.device-build/f16check.mjs
// Device: node .device-build/f16check.mjs 0
import { create, globals } from 'webgpu';
import { KernelRunner, fromF16Bits, matmul, matmulSubgroup, subgroupMatrixSyntax, toF16Bits, upload, readF32, type MatmulParams, type SgTile } from '../../packages/backend-gpu/src/compiled/index.js';

Object.assign(globalThis, globals);

export const VARIANTS: SgTile[] = [
  { wm: 2, wn: 2, rt: 2, ct: 2, bk: 32 },
  { wm: 2, wn: 2, rt: 4, ct: 2, bk: 32 },
  // one subgroup per workgroup (in case several subgroups of a workgroup misbehave)
  { wm: 1, wn: 1, rt: 4, ct: 4, bk: 32 },
  { wm: 2, wn: 2, rt: 4, ct: 4, bk: 32 },
];

const out: Record<string, unknown> = {};
const keep: { gpu?: unknown } = {};
const log = (s: string) => process.stderr.write(s + '\n');
const F16_U = 2 ** -11;
// F16CHECK_FALLBACK=1: the shader-f16 fallback kernel at small sizes (a dry run of this script on an adapter without subgroup matrices)
const DRY = process.env.F16CHECK_FALLBACK === '1';
let legacy = false;
const kernel = (p: MatmulParams, v: SgTile, sgSize: number) => (DRY ? matmul({ ...p, roundF16: true }) : matmulSubgroup({ ...p, sgTile: v, subgroupSize: sgSize, legacyMajorness: legacy }));

function rng(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
}
function randn(n: number, seed: number, scale = 1) {
  const u = rng(seed);
  return Float32Array.from({ length: n }, () => scale * Math.sqrt(-2 * Math.log(u() + 1e-12)) * Math.cos(2 * Math.PI * u()));
}
const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
const geluGrad = (x: number) => {
  const t = Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * Math.sqrt(2 / Math.PI) * (1 + 3 * 0.044715 * x * x);
};

async function main() {
  const v = VARIANTS[Number(process.argv[2] ?? 0)]!;
  out.variant = v;
  // kept referenced: Dawn tears down under the device when its instance is garbage-collected
  const gpu = (keep.gpu = create(['enable-dawn-features=allow_unsafe_apis,disable_robustness,disable_workgroup_init,vulkan_enable_f16_on_nvidia', 'disable-dawn-features=timestamp_quantization']));
  const adapter = (await gpu.requestAdapter({ powerPreference: 'high-performance' }))!;
  const info = adapter.info as GPUAdapterInfo & { subgroupMaxSize?: number; subgroupMatrixConfigs?: { componentType: string; resultComponentType: string; M: number; N: number; K: number }[] };
  out.adapter = info.description;
  out.subgroupMaxSize = info.subgroupMaxSize;
  out.configs = [...(info.subgroupMatrixConfigs ?? [])].map((c) => `${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`);
  const want = (DRY ? ['shader-f16', 'timestamp-query'] : ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix', 'timestamp-query']) as GPUFeatureName[];
  const missing = want.filter((f) => !adapter.features.has(f));
  if (missing.length) throw new Error(`adapter lacks ${missing.join(', ')}`);
  const l = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: want,
    requiredLimits: { maxStorageBufferBindingSize: l.maxStorageBufferBindingSize, maxBufferSize: l.maxBufferSize, maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize, maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup, maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX },
  });
  device.onuncapturederror = (e) => log(`uncaptured: ${(e as GPUUncapturedErrorEvent).error.message}`);
  const runner = new KernelRunner(device);
  const sgSize = info.subgroupMaxSize ?? 32;
  if (!DRY) {
    out.syntax = await subgroupMatrixSyntax(device);
    legacy = out.syntax === 'legacy';
    if (process.env.F16CHECK_SYNTAX) legacy = process.env.F16CHECK_SYNTAX === 'legacy';
    out.syntaxUsed = legacy ? 'legacy' : 'template';
  }

  // correctness
  const checks: Record<string, unknown>[] = [];
  const cases: MatmulParams[] = [];
  for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]] as const) {
    cases.push({ m: 100, n: 76, k: 72, transA, transB, bias: true, residual: true });
    cases.push({ m: 192, n: 160, k: 96, transA, transB, geluBackward: true, accumulate: true });
  }
  cases.push({ m: 130, n: 96, k: 64, gelu: 'both', bias: true });
  for (const p of cases) {
    const t0 = performance.now();
    const A = randn(p.m * p.k, 3);
    const B = randn(p.k * p.n, 4).map((x) => fromF16Bits(toF16Bits(x)));
    const offB = 64;
    const bh = new Uint16Array(offB + B.length + 2).fill(toF16Bits(1e4));
    B.forEach((x, i) => (bh[offB + i] = toF16Bits(x)));
    const bias = randn(p.n, 5);
    const R = randn(p.m * p.n, 6);
    const F = randn(p.m * p.n, 7, 2);
    const C0 = randn(p.m * p.n, 8);
    const spec = kernel({ ...p, aType: 'f32', bType: 'f16', offsetB: offB }, v, sgSize);
    const bufs = { A: upload(device, A), B: upload(device, new Float32Array(bh.buffer)), bias: upload(device, bias), R: upload(device, R), F: upload(device, F), C: upload(device, p.accumulate ? C0 : new Float32Array(p.m * p.n).fill(NaN)), pre: upload(device, new Float32Array(p.m * p.n)) };
    device.pushErrorScope('validation');
    await runner.run([spec, bufs]);
    const err = await device.popErrorScope();
    if (err) throw new Error(`${spec.label}: ${err.message}`);
    const got = await readF32(device, bufs.C, p.m * p.n);
    let worst = 0;
    let bad = 0;
    let roundingSeen = false;
    for (let i = 0; i < p.m; i++) {
      for (let j = 0; j < p.n; j++) {
        let s = 0;
        let mag = 0;
        for (let q = 0; q < p.k; q++) {
          const a = A[p.transA ? q * p.m + i : i * p.k + q]!;
          const b = B[p.transB ? j * p.k + q : q * p.n + j]!;
          s += a * b;
          mag += Math.abs(a * b);
        }
        const ci = i * p.n + j;
        let x = s;
        let d = 1;
        if (p.bias) x += bias[j]!;
        if (p.geluBackward) {
          d = Math.abs(geluGrad(F[ci]!));
          x *= geluGrad(F[ci]!);
        }
        if (p.residual) x += R[ci]!;
        if (p.accumulate) x += C0[ci]!;
        const want = p.gelu === 'both' ? gelu(x) : x;
        const acc = 2 * p.k * 2 ** -24 * mag * d + 1e-6;
        const tol = (2 * F16_U + 2 * F16_U ** 2) * mag * d * (p.gelu ? 1.2 : 1) + acc + (p.gelu || p.geluBackward ? 4e-6 * (mag + Math.abs(want)) : 0);
        const e = Math.abs(got[ci]! - want);
        if (!(e <= tol)) bad++;
        worst = Math.max(worst, Number.isNaN(e) ? Infinity : e / tol);
        if (e > 4 * acc) roundingSeen = true;
      }
    }
    const c = { label: spec.label, ok: bad === 0 && roundingSeen, bad, worstErrOverBound: worst, roundingSeen, ms: Math.round(performance.now() - t0) };
    checks.push(c);
    log(JSON.stringify(c));
  }
  out.checks = checks;
  out.correct = checks.every((c) => c.ok);

  // timing
  const timed: Record<string, unknown>[] = [];
  const shapes: (MatmulParams & { what: string })[] = [
    { what: '4096^3 f16xf16', m: 4096, n: 4096, k: 4096, dtype: 'f16' },
    { what: '4096^3 A f32 (rounded on load) x B f16', m: 4096, n: 4096, k: 4096, aType: 'f32', bType: 'f16' },
    { what: 'qkv', m: 4096, n: 2304, k: 768, aType: 'f32', bType: 'f16', bias: true },
    { what: 'fc', m: 4096, n: 3072, k: 768, aType: 'f32', bType: 'f16', bias: true, gelu: 'both' },
    { what: 'fc2', m: 4096, n: 768, k: 3072, aType: 'f32', bType: 'f16', bias: true, residual: true },
    { what: 'dx fc2 (NT)', m: 4096, n: 3072, k: 768, transB: true, aType: 'f32', bType: 'f16', geluBackward: true },
    { what: 'dW fc (TN)', m: 768, n: 3072, k: 4096, transA: true, aType: 'f32', bType: 'f32', accumulate: true },
    { what: 'lm head', m: 4096, n: 256, k: 768, transB: true, aType: 'f32', bType: 'f16' },
  ];
  const qs = device.createQuerySet({ type: 'timestamp', count: 2 });
  const res = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const rd = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  for (const s0 of shapes) {
    const s = DRY ? { ...s0, m: s0.m / 16, n: Math.max(16, s0.n / 16), k: s0.k / 16 } : s0;
    const spec = kernel(s, v, sgSize);
    const mk = (bytes: number) => device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    const eb = (t?: string) => (t === 'f16' || s.dtype === 'f16' ? 2 : 4);
    const bufs: Record<string, GPUBuffer> = { A: mk(s.m * s.k * eb(s.aType)), B: mk(s.k * s.n * eb(s.bType)), bias: mk(s.n * 4), R: mk(s.m * s.n * 4), F: mk(s.m * s.n * 4), C: mk(s.m * s.n * 4), pre: mk(s.m * s.n * 4) };
    await runner.pipelineAsync(spec);
    const group = runner.bind(spec, spec.bindings.map((b) => bufs[b.name]!));
    const go = async (n: number, timedRun: boolean) => {
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass(timedRun ? { timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } } : undefined);
      for (let i = 0; i < n; i++) runner.encode(pass, spec, group);
      pass.end();
      if (timedRun) {
        enc.resolveQuerySet(qs, 0, 2, res, 0);
        enc.copyBufferToBuffer(res, 0, rd, 0, 16);
      }
      device.queue.submit([enc.finish()]);
      await device.queue.onSubmittedWorkDone();
    };
    await go(3, false);
    const reps = 10;
    await go(reps, true);
    await rd.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(rd.getMappedRange().slice(0));
    rd.unmap();
    const ms = Number(t[1]! - t[0]!) / 1e6 / reps;
    const r = { what: s.what, label: spec.label, ms, tflops: spec.flops! / (ms * 1e-3) / 1e12 };
    timed.push(r);
    log(JSON.stringify(r));
    Object.values(bufs).forEach((b) => b.destroy());
  }
  out.timed = timed;
}

main()
  .catch((e) => {
    out.error = e instanceof Error ? e.message : String(e);
  })
  .finally(() => {
    console.log(JSON.stringify(out));
    process.exit(0);
  });
