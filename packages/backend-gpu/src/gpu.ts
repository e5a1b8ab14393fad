/**
 * Where the WebGPU implementation comes from. In a browser that is `navigator.gpu`; in Node it is
 * Dawn, from the `webgpu` npm package, loaded with a dynamic import so that browsers (and bundlers)
 * never see it, and installed as the same globals a browser has (GPUBufferUsage, navigator.gpu, ...)
 * because @tensorflow/tfjs-backend-webgpu reads them.
 *
 * Only the few members patchflow reads are typed here (structurally), so the package needs neither
 * the DOM's WebGPU typings nor @webgpu/types, and tests can hand in a fake.
 */

import { PatchflowError } from '@patchflow/tensor';
import { quiet, quietGpu } from './probe.js';

export interface GpuAdapterInfoLike {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  /** Newer spelling (GPUAdapterInfo.isFallbackAdapter); Dawn sets it, e.g. true for lavapipe. */
  isFallbackAdapter?: boolean;
}

export interface GpuAdapterLike {
  info?: GpuAdapterInfoLike;
  /** Older spelling, on the adapter itself. */
  isFallbackAdapter?: boolean;
  features?: Iterable<string>;
  limits?: object;
  /** Pre-2024 browsers expose the info only through this. */
  requestAdapterInfo?: () => Promise<GpuAdapterInfoLike>;
}

export interface GpuLike {
  requestAdapter(options?: { powerPreference?: 'low-power' | 'high-performance' }): Promise<GpuAdapterLike | null>;
}

/** A failure to obtain a WebGPU implementation at all; `message` is meant for the user. */
export class GpuLoadError extends PatchflowError {
  override name = 'GpuLoadError';
}

export const isNode = typeof process !== 'undefined' && typeof process.versions?.node === 'string';

type DawnModule = { create: (flags: string[]) => GpuLike; globals: Record<string, unknown> };

/** Installs `navigator.gpu` without clobbering a navigator the runtime already has (Node >= 21 has one). */
function installNavigatorGpu(gpu: GpuLike): void {
  const g = globalThis as { navigator?: object };
  const nav = g.navigator;
  if (nav) {
    try {
      Object.defineProperty(nav, 'gpu', { value: gpu, configurable: true, enumerable: true, writable: true });
      if ((nav as { gpu?: unknown }).gpu === gpu) return;
    } catch {
      // a frozen or exotic navigator: replace it below with one that inherits from it
    }
  }
  const replacement = Object.create(nav ?? null) as { gpu: GpuLike };
  replacement.gpu = gpu;
  Object.defineProperty(globalThis, 'navigator', { value: replacement, configurable: true, enumerable: true, writable: true });
}

/**
 * A Dawn instance with `flags` (e.g. 'enable-dawn-features=allow_unsafe_apis,disable_robustness'), its
 * native logging captured (probe.ts), without installing it as navigator.gpu. The compiled training
 * step asks for one of its own, so it can choose toggles the tfjs backend's instance does not use.
 */
export async function createDawnGpu(flags: string[]): Promise<GpuLike> {
  // A non-literal specifier, and the bundler hints, keep 'webgpu' out of browser bundles.
  const specifier = 'webgpu';
  let mod: DawnModule;
  try {
    mod = (await import(/* @vite-ignore */ /* webpackIgnore: true */ specifier)) as DawnModule;
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    throw new GpuLoadError(
      `the 'webgpu' npm package (Dawn) could not be loaded: ${msg}. It ships prebuilt binaries for ` +
        `linux-x64, linux-arm64, darwin and win32; reinstall dependencies (npm ci) on this machine ` +
        `(${process.platform}-${process.arch}) so that node_modules/webgpu/dist/ has one for it`,
    );
  }
  if (typeof mod.create !== 'function' || !mod.globals) {
    throw new GpuLoadError(`the 'webgpu' npm package (Dawn) could not be loaded: it exports no create()/globals (unsupported version?)`);
  }
  // Browser-style globals (GPUBufferUsage, GPUMapMode, GPUShaderStage, ...), never overwriting.
  const g = globalThis as Record<string, unknown>;
  for (const [k, v] of Object.entries(mod.globals)) if (!(k in g)) g[k] = v;
  // Mesa's "not a conformant vulkan implementation" banner (lavapipe) is noise for a library user.
  process.env.MESA_VK_IGNORE_CONFORMANCE_WARNING ??= '1';
  try {
    return quietGpu(await quiet(() => mod.create(flags)));
  } catch (e) {
    throw new GpuLoadError(`the 'webgpu' npm package (Dawn) failed to start: ${e instanceof Error ? e.message : String(e)}`);
  }
}

async function loadDawn(flags: string[]): Promise<GpuLike> {
  const gpu = await createDawnGpu(flags);
  installNavigatorGpu(gpu);
  return gpu;
}

let defaultGpuPromise: Promise<GpuLike | undefined> | undefined;

/**
 * The platform's WebGPU: an existing `navigator.gpu` (browsers, Deno, or a Node program that set one
 * up itself), else Dawn in Node (installed as `navigator.gpu`), else undefined. Loads Dawn at most once.
 * Rejects with a GpuLoadError when Dawn is there but cannot be loaded.
 */
export function defaultGpu(dawnFlags: string[] = []): Promise<GpuLike | undefined> {
  defaultGpuPromise ??= (async () => {
    const existing = (globalThis as { navigator?: { gpu?: GpuLike } }).navigator?.gpu;
    if (existing) return existing;
    if (!isNode) return undefined;
    return loadDawn(dawnFlags);
  })();
  const p = defaultGpuPromise;
  // A failed load may be fixed (by installing something) without restarting: do not cache failures.
  p.catch(() => {
    if (defaultGpuPromise === p) defaultGpuPromise = undefined;
  });
  return p;
}

/** Resolves to `value`, or to `onTimeout()` after `ms` (the timer does not keep Node alive). */
export function withTimeout<T>(value: Promise<T>, ms: number, onTimeout: () => T): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => resolve(onTimeout()), ms);
    (timer as { unref?: () => void }).unref?.();
    value.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
