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
import { describe, expect, inject, it } from 'vitest';
import { BackendError, getBackendPlugin, prepareBackend, registerBackend, tf } from '@patchflow/tensor';
import { createWebGpuBackend, GpuLoadError, webgpuBackend, type GpuAdapterLike, type GpuLike } from '../src/index.js';
import { explainDawnLog, meaningfulLines } from '../src/probe.js';

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
    if (process.platform === 'linux') expect(a.reason).toMatch(/Vulkan driver.*lavapipe.*bookworm-backports mesa-vulkan-drivers/);
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
      f16: { available: true, subgroupMatrix: false, configs: [], reason: 'the adapter lacks chromium-experimental-subgroup-matrix' },
    });
    // `patchflow backends` says so too
    expect(b.capabilities().notes).toContain('--precision f16: yes (shader-f16), without tensor cores: the adapter lacks chromium-experimental-subgroup-matrix');
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

// The real paths, end to end, in fresh processes: Dawn with a Vulkan loader that finds no driver,
// and Dawn in this process on whatever adapter the machine has. Uses the built package (npm test
// builds first) and checks that nothing Dawn or the driver prints reaches stderr.
const dist = join(dirname(fileURLToPath(import.meta.url)), '../dist/index.js');
const run = (script: string, env: Record<string, string> = {}) =>
  promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env }, timeout: 120_000 });

describe.skipIf(process.platform !== 'linux' || !existsSync(dist))('real Dawn', () => {
  it('no Vulkan driver: checkAvailability explains in one line, and stderr stays clean', async () => {
    const script = `const m = await import(${JSON.stringify(dist)}); console.log(JSON.stringify(await m.webgpuBackend.checkAvailability()));`;
    const { stdout, stderr } = await run(script, { VK_ICD_FILENAMES: '/nonexistent/icd.json', VK_DRIVER_FILES: '/nonexistent/icd.json' });
    const a = JSON.parse(stdout.trim().split('\n').at(-1)!) as { ok: boolean; reason?: string };
    expect(a.ok).toBe(false);
    // with a loader: "no Vulkan driver … /nonexistent/icd.json"; on a machine without one: "no Vulkan loader"
    expect(a.reason).toMatch(/^no Vulkan (driver: the Vulkan loader found no driver \(ICD\) \(it could not open \/nonexistent\/icd\.json|loader \(libvulkan\.so\.1 not found\))/);
    expect(a.reason).toMatch(/lavapipe/);
    expect(a.reason).not.toMatch(/\n/);
    expect(stderr).toBe('');
  });

  it('using the GPU in this process: Dawn\'s and the driver\'s output is captured, shown only with PATCHFLOW_GPU_LOG=1', async (ctx) => {
    const gate = inject('webgpu');
    if (!gate.ok) return ctx.skip(gate.reason);
    const script =
      `const m = await import(${JSON.stringify(dist)}); const t = await import('@patchflow/tensor');` +
      `await t.useBackend('webgpu'); const x = t.tf.tensor([1, 2, 3]);` +
      `console.log(JSON.stringify([...(await t.tf.add(x, x).data())])); console.error('a line of our own');`;
    const quiet = await run(script);
    expect(quiet.stdout.trim()).toBe('[2,4,6]');
    expect(quiet.stderr).toBe('a line of our own\n');
    const loud = await run(script, { PATCHFLOW_GPU_LOG: '1' });
    const lines = loud.stderr.split('\n').filter((l) => l !== '');
    expect(lines.at(-1)).toBe('a line of our own');
    for (const l of lines.slice(0, -1)) expect(l).toMatch(/^\[dawn\] /);
  });
});

describe('explainDawnLog', () => {
  const at = '    at operator() (/home/runner/work/node-webgpu/third_party/dawn/src/dawn/native/vulkan/BackendVk.cpp:368)';
  it('no loader', () => {
    const r = explainDawnLog([`Warning: Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file: No such file or directory`, at], 'linux');
    expect(r).toMatch(/^no Vulkan loader \(libvulkan\.so\.1 not found\); install a Vulkan driver: .*lavapipe.*\.ci\/run/);
  });
  it('a broken loader', () => {
    const r = explainDawnLog([`Warning: Couldn't load Vulkan: /lib/x86_64-linux-gnu/libvulkan.so.1: file too short`, at], 'linux');
    expect(r).toMatch(/^the Vulkan loader could not be loaded \(\/lib\/x86_64-linux-gnu\/libvulkan\.so\.1: file too short\)/);
  });
  it('a loader without a driver', () => {
    const r = explainDawnLog(['Warning: loader_get_json: Failed to open JSON file /x/icd.json', 'Warning: vkCreateInstance: Found no drivers!'], 'linux');
    expect(r).toMatch(/^no Vulkan driver: the Vulkan loader found no driver \(ICD\) \(it could not open \/x\/icd\.json; check VK_DRIVER_FILES/);
  });
  it('nothing printed: the platform\'s advice', () => {
    expect(explainDawnLog([], 'linux')).toMatch(/^no WebGPU adapter found: install a Vulkan driver/);
    expect(explainDawnLog([], 'darwin')).toMatch(/Metal/);
    expect(explainDawnLog([], 'win32')).toMatch(/Direct3D 12/);
  });
  it('drops source locations from logs', () => {
    expect(meaningfulLines(['Warning: x', at])).toEqual(['Warning: x']);
  });
});
