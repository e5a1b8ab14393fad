/// <reference types="@webgpu/types" />
/**
 * Shared pieces of the compiled-kernel tests: one WebGPU device per test file (Dawn from the `webgpu`
 * package; lavapipe in CI), a runner in poison mode, seeded random data, and float64 comparison.
 * When no adapter exists the files skip with one line, except under CI, where they fail.
 */
import { expect } from 'vitest';
import { useBackend } from '@patchflow/tensor';
import { AdamW, GPT, buildPlan, finalizeModelConfig, resolveConfig, resolvePhases } from '@patchflow/trainer';
import { KernelRunner, upload, readF32, readI32 } from '../src/compiled/index.js';

export const IN_CI = !!process.env.CI && !/^(0|false|no)$/i.test(process.env.CI);

export interface Gpu {
  device: GPUDevice;
  runner: KernelRunner;
  f16: boolean;
}

/** Every GPU instance created (a second device with raised limits must not drop the first one). */
const keptGpus: GPU[] = [];

/** A device with large storage bindings (shader-f16 and timestamp-query when present), or null (skip). */
export async function compiledGpu(opts: { maxLimits?: boolean } = {}): Promise<Gpu | null> {
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  let reason: string;
  try {
    const { create, globals } = (await import('webgpu')) as { create: (f: string[]) => GPU; globals: Record<string, unknown> };
    const g = globalThis as Record<string, unknown>;
    for (const [k, v] of Object.entries(globals)) if (!(k in g)) g[k] = v;
    // keep every GPU instance referenced: one that is garbage-collected is torn down under its device,
    // and Dawn's event processing then blocks forever on the freed instance's lock (seen when a test
    // file asked for a second device and the first instance was dropped). Robustness (bounds
    // clamping) and workgroup-memory zero-init are off: the kernels must not rely on either, and
    // guard regions around bound ranges (guarded() below) catch accesses outside them.
    const instance = create(['enable-dawn-features=allow_unsafe_apis,disable_robustness,disable_workgroup_init']);
    keptGpus.push(instance);
    const adapter = await instance.requestAdapter();
    if (adapter) {
      const l = adapter.limits;
      const f16 = adapter.features.has('shader-f16');
      const features = (['shader-f16', 'timestamp-query'] as const).filter((f) => adapter.features.has(f));
      const device = await adapter.requestDevice({
        requiredFeatures: features,
        requiredLimits: {
          maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
          maxBufferSize: l.maxBufferSize,
          // workgroup memory and invocations stay at WebGPU's defaults (16 KiB, 256) unless asked:
          // every kernel the generators make by default must fit them
          ...(opts.maxLimits
            ? {
                maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
                maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
                maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
              }
            : {}),
        },
      });
      device.addEventListener('uncapturederror', (e) => console.error('[compiled] uncaptured WebGPU error:', (e as GPUUncapturedErrorEvent).error.message));
      return { device, runner: new KernelRunner(device, { poison: true }), f16 };
    }
    reason = 'no WebGPU adapter';
  } catch (e) {
    reason = e instanceof Error ? e.message : String(e);
  }
  if (IN_CI) throw new Error(`compiled-kernel tests need a WebGPU adapter under CI: ${reason}`);
  console.warn(`[backend-gpu] skipping compiled-kernel tests: ${reason}`);
  return null;
}

/** mulberry32: deterministic uniform [0, 1). */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n normal samples (Box-Muller) times `scale`, as float32. */
export function randn(n: number, seed: number, scale = 1): Float32Array {
  const u = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(u() + 1e-12)) * Math.cos(2 * Math.PI * u());
  return out;
}

/** n uniform integers in [0, max). */
export function randInt(n: number, seed: number, max: number): Int32Array {
  const u = rng(seed);
  return Int32Array.from({ length: n }, () => Math.floor(u() * max));
}

/**
 * |got − want| ≤ atol + rtol·|want| everywhere (NaN in got fails: poison shows unwritten elements),
 * and the reference is not all zeros (so the test can fail).
 */
export function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, atol: number, rtol = 0): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    const excess = Number.isNaN(g) || Number.isNaN(w) ? Infinity : Math.abs(g - w) - (atol + rtol * Math.abs(w));
    if (excess > worstExcess) {
      worst = i;
      worstExcess = excess;
      if (excess === Infinity) break;
    }
  }
  if (worst >= 0) expect.fail(`${what}: element ${worst} of ${want.length}: got ${got[worst]}, want ${want[worst]} (atol ${atol}, rtol ${rtol})`);
  if (want.length > 1) {
    let nz = false;
    for (let i = 0; i < want.length && !nz; i++) nz = want[i] !== 0;
    expect(nz, `${what}: the reference is all zeros, the test proves nothing`).toBe(true);
  }
}

export { upload, readF32, readI32 };

/** Bytes of NaN guard before and after a guarded range (the storage offset alignment). */
export const GUARD = 256;

/**
 * `data` placed at byte offset GUARD of a buffer whose GUARD bytes before and after hold NaN: bound as
 * a sub-range, as the executor binds parameters inside flat buffers. A kernel reading outside the
 * range picks up NaN; one writing outside it breaks the guards (checkGuards).
 */
export function guarded(device: GPUDevice, data: Float32Array | Int32Array | Uint16Array | number): { buffer: GPUBuffer; offset: number; size: number } {
  const bytes = typeof data === 'number' ? data * 4 : Math.ceil(data.byteLength / 4) * 4;
  const size = Math.max(4, bytes);
  const all = new Float32Array((2 * GUARD + Math.ceil(size / 16) * 16) / 4).fill(NaN);
  if (typeof data !== 'number') new Uint8Array(all.buffer, GUARD, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  const buffer = upload(device, all);
  return { buffer, offset: GUARD, size };
}

/** Reads a guarded range back as f32 and checks that both guards still hold NaN. */
export async function readGuarded(device: GPUDevice, r: { buffer: GPUBuffer; offset: number; size: number }, count: number): Promise<Float32Array> {
  const all = await readF32(device, r.buffer, r.buffer.size / 4);
  const tailStart = (r.offset + Math.ceil(r.size / 16) * 16) / 4;
  for (let i = 0; i < r.offset / 4; i++) if (!Number.isNaN(all[i]!)) expect.fail(`a kernel wrote ${all[i]} before its bound range (guard word ${i})`);
  for (let i = tailStart; i < all.length; i++) if (!Number.isNaN(all[i]!)) expect.fail(`a kernel wrote ${all[i]} after its bound range (guard word ${i - tailStart})`);
  return all.slice(r.offset / 4, r.offset / 4 + count);
}

/** A float64 gelu (tanh form, as @patchflow/tensor ops.ts) and its derivative. */
export const GELU_C = Math.sqrt(2 / Math.PI);
export const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(GELU_C * (x + 0.044715 * x ** 3)));
export const geluGrad = (x: number) => {
  const t = Math.tanh(GELU_C * (x + 0.044715 * x ** 3));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * x * x);
};

/**
 * A model, optimizer and resolved phase of a tiny config (2 layers, d 32, T 16, batch 3, byte vocab),
 * on the cpu backend (the eager reference of the compiled-step tests); `model` and `over` change it.
 */
export async function tinyPhase(model: Record<string, unknown> = {}, over: Record<string, unknown> = {}) {
  await useBackend('cpu');
  const config0 = resolveConfig({ model: { nLayer: 2, nHead: 2, dModel: 32, seqLen: 16, ...model }, batchSize: 3 }, over);
  const mc = finalizeModelConfig(config0.model, 256);
  const config = { ...config0, model: mc };
  const gpt = new GPT(mc, 11);
  const optimizer = new AdamW(config.optim, gpt.specs.map((s) => ({ name: s.name, variable: gpt.p(s.name), decay: s.decay })));
  const phase = resolvePhases(buildPlan([], config), config, [], gpt, optimizer)[0]!;
  return { config, gpt, optimizer, phase };
}
