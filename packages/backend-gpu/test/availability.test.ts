/**
 * The plugin's contract without a GPU: registration, cheap import, reasons instead of throws, the
 * adapter timeout, capabilities, and one copy of tfjs-core. Runs everywhere.
 */
import { execFile } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { BackendError, getBackendPlugin, prepareBackend, registerBackend, tf } from '@patchflow/tensor';
import { createWebGpuBackend, GpuLoadError, webgpuBackend, type GpuAdapterLike, type GpuLike } from '../src/index.js';

// Checked before anything below can load Dawn or tfjs-backend-webgpu.
const afterImport = {
  tfjsWebgpuFactory: !!tf.findBackendFactory('webgpu'),
  dawnGlobals: 'GPUBufferUsage' in globalThis,
};

/** node_modules/<name> nearest above this file (@patchflow/tensor exports only `import`, so no require.resolve). */
function packageDir(name: string): string {
  for (let d = dirname(fileURLToPath(import.meta.url)); ; d = dirname(d)) {
    const candidate = join(d, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return realpathSync(candidate);
    if (dirname(d) === d) throw new Error(`${name} not found in any node_modules above the tests`);
  }
}

const fakeGpu = (requestAdapter: GpuLike['requestAdapter']) => async (): Promise<GpuLike> => ({ requestAdapter });
const lavapipeLike: GpuAdapterLike = {
  info: { vendor: 'mesa', architecture: 'software', device: 'llvmpipe', description: 'llvmpipe: Mesa 25.0.7', isFallbackAdapter: true },
  features: new Set(['timestamp-query', 'shader-f16']),
  limits: { maxBufferSize: 2 ** 32 - 1, maxStorageBufferBindingSize: 2 ** 27, somethingElse: 5 },
};

describe('registration and import', () => {
  it('registers the default plugin as "webgpu" on import', () => {
    expect(getBackendPlugin('webgpu')).toBe(webgpuBackend);
    expect(webgpuBackend.tfjsName).toBe('webgpu');
  });

  it('importing the package loads neither Dawn nor tfjs-backend-webgpu', () => {
    expect(afterImport).toEqual({ tfjsWebgpuFactory: false, dawnGlobals: false });
  });

  it('capabilities: gpu, rank <= 4, the fused ops it registers kernels for', () => {
    const b = createWebGpuBackend();
    const c = b.capabilities();
    expect(c.device).toBe('gpu');
    expect(c.maxRank).toBe(4);
    expect(c.fusedOps).toEqual(['PfBlockSparseMatMul']);
    const names = (b.kernels?.() ?? []).map((k) => k.kernelName);
    expect(names).toEqual(expect.arrayContaining(['PfBlockSparseMatMul', 'PfBlockSparseMatMulGrad']));
  });

  it('tfjs-backend-webgpu and @patchflow/tensor share one @tensorflow/tfjs-core', () => {
    const req = createRequire(import.meta.url);
    const fromWebgpu = createRequire(req.resolve('@tensorflow/tfjs-backend-webgpu'));
    const fromTensor = createRequire(join(packageDir('@patchflow/tensor'), 'package.json'));
    expect(fromWebgpu.resolve('@tensorflow/tfjs-core')).toBe(fromTensor.resolve('@tensorflow/tfjs-core'));
    // The module instance (the webgpu node bundle require()s it) is the one whose API patchflow exports.
    expect(fromWebgpu('@tensorflow/tfjs-core').Tensor).toBe(tf.Tensor);
    expect(fromWebgpu('@tensorflow/tfjs-core').engine()).toBe(tf.engine());
  });
});

describe('checkAvailability gives reasons, not throws', () => {
  it('no adapter: says to install a Vulkan driver (Linux)', async () => {
    const b = createWebGpuBackend({ gpu: fakeGpu(async () => null) });
    const a = await b.checkAvailability();
    expect(a.ok).toBe(false);
    if (a.ok) return;
    expect(a.reason).toMatch(/^no WebGPU adapter found/);
    if (process.platform === 'linux') expect(a.reason).toMatch(/Vulkan driver.*mesa-vulkan-drivers.*bookworm-backports/);
    // and registry-level use turns it into a BackendError that carries the reason
    registerBackend({ ...b, name: 'webgpu-missing' });
    await expect(prepareBackend('webgpu-missing')).rejects.toThrow(new BackendError(`backend "webgpu-missing" is not available: ${a.reason}`));
  });

  it('Dawn fails to load: the loader message is the reason', async () => {
    const msg = "the 'webgpu' npm package (Dawn) could not be loaded: Cannot find module dawn.node";
    const b = createWebGpuBackend({
      gpu: async () => {
        throw new GpuLoadError(msg);
      },
    });
    expect(await b.checkAvailability()).toEqual({ ok: false, reason: msg });
  });

  it('any other error from the provider or requestAdapter becomes a reason', async () => {
    const b1 = createWebGpuBackend({
      gpu: async () => {
        throw new TypeError('boom');
      },
    });
    expect(await b1.checkAvailability()).toEqual({ ok: false, reason: 'WebGPU could not be initialised: boom' });
    const b2 = createWebGpuBackend({
      gpu: fakeGpu(async () => {
        throw new Error('device lost');
      }),
    });
    expect(await b2.checkAvailability()).toEqual({ ok: false, reason: 'requesting a WebGPU adapter failed: device lost' });
  });

  it('no WebGPU implementation at all', async () => {
    const a = await createWebGpuBackend({ gpu: async () => undefined }).checkAvailability();
    expect(a.ok).toBe(false);
    if (!a.ok) expect(a.reason).toMatch(/navigator\.gpu is missing/);
  });

  it('a hanging requestAdapter times out instead of hanging', async () => {
    const b = createWebGpuBackend({ gpu: fakeGpu(() => new Promise(() => {})), adapterTimeoutMs: 50 });
    const t0 = Date.now();
    const a = await b.checkAvailability();
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(a.ok).toBe(false);
    if (!a.ok) expect(a.reason).toMatch(/did not finish within 0\.05s/);
  });

  it('setup without an implementation throws a BackendError carrying the reason', async () => {
    const b = createWebGpuBackend({ gpu: async () => undefined });
    await expect(b.setup()).rejects.toBeInstanceOf(BackendError);
  });
});

describe('adapter facts', () => {
  it('an adapter: ok, and capabilities notes name it', async () => {
    let options: unknown;
    const b = createWebGpuBackend({
      gpu: fakeGpu(async (o) => {
        options = o;
        return lavapipeLike;
      }),
    });
    expect(b.capabilities().notes).toContain('adapter not queried yet');
    expect(await b.checkAvailability()).toEqual({ ok: true });
    expect(options).toEqual({ powerPreference: 'high-performance' });
    const notes = b.capabilities().notes ?? [];
    expect(notes).toContain('adapter: mesa / software / llvmpipe');
    expect(notes).toContain('description: llvmpipe: Mesa 25.0.7');
    expect(notes.some((n) => /software \(fallback\) adapter/.test(n))).toBe(true);
    expect(notes.some((n) => /rank 4/.test(n))).toBe(true);
  });

  it('gpuInfo reports info, features and the relevant limits', async () => {
    const b = createWebGpuBackend({ gpu: fakeGpu(async () => lavapipeLike) });
    expect(await b.gpuInfo()).toEqual({
      available: true,
      implementation: 'injected',
      vendor: 'mesa',
      architecture: 'software',
      device: 'llvmpipe',
      description: 'llvmpipe: Mesa 25.0.7',
      isFallbackAdapter: true,
      features: ['shader-f16', 'timestamp-query'],
      limits: { maxBufferSize: 2 ** 32 - 1, maxStorageBufferBindingSize: 2 ** 27 },
    });
    const none = createWebGpuBackend({ gpu: fakeGpu(async () => null) });
    const i = await none.gpuInfo();
    expect(i.available).toBe(false);
  });

  it('pre-2024 adapters: info from requestAdapterInfo()', async () => {
    const old: GpuAdapterLike = { isFallbackAdapter: false, requestAdapterInfo: async () => ({ vendor: 'nvidia', architecture: 'hopper' }) };
    const i = await createWebGpuBackend({ gpu: fakeGpu(async () => old) }).gpuInfo();
    expect(i).toMatchObject({ available: true, vendor: 'nvidia', architecture: 'hopper', isFallbackAdapter: false });
  });
});

// The real no-driver path, end to end: Dawn with a Vulkan loader that finds no driver. Uses the
// built package (npm test builds first).
const dist = join(dirname(fileURLToPath(import.meta.url)), '../dist/index.js');
describe.skipIf(process.platform !== 'linux' || !existsSync(dist))('real Dawn, no Vulkan driver', () => {
  it('checkAvailability explains, in a fresh process', async () => {
    const script =
      `const m = await import(${JSON.stringify(dist)});` +
      `console.log(JSON.stringify(await m.webgpuBackend.checkAvailability()));`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, VK_ICD_FILENAMES: '/nonexistent/icd.json', VK_DRIVER_FILES: '/nonexistent/icd.json' },
      timeout: 60_000,
    });
    const a = JSON.parse(stdout.trim().split('\n').at(-1)!);
    expect(a.ok).toBe(false);
    expect(a.reason).toMatch(/^no WebGPU adapter found: install a Vulkan driver/);
  });
});
