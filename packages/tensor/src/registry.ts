/**
 * The backend hook interface. A backend package (ours or a third party's) describes itself with a
 * `BackendPlugin` and calls `registerBackend`; patchflow never needs to know its internals.
 */
import * as tf from '@tensorflow/tfjs-core';
import { PatchflowError } from './errors.js';
import { processSingleton } from './singleton.js';
import pkg from '../package.json' with { type: 'json' };

export type Availability = { ok: true } | { ok: false; reason: string };

export interface BackendCapabilities {
  /** What executes the math: a CPU, a GPU, or a simulated chip (which still computes on some real device). */
  device: 'cpu' | 'gpu' | 'simulated';
  /** Highest tensor rank the backend handles correctly. */
  maxRank: number;
  /** Names of patchflow fused ops (see ops.ts: `FUSED_OPS`) this backend implements natively. */
  fusedOps: string[];
  /** Free-form facts worth printing in `patchflow backends` (threads, SIMD, adapter name, ...). */
  notes?: string[];
}

/** A kernel a backend adds (a patchflow fused op) or replaces (a tfjs kernel such as BatchMatMul). */
export type KernelSpec = Omit<tf.KernelConfig, 'backendName'>;

export interface BackendPlugin {
  /** The name users choose it by (config key `backend`). */
  name: string;
  description: string;
  /** Name under which the tfjs backend is registered (may differ from `name`). */
  tfjsName: string;
  /** Cheap check that says, in words a user can act on, why the backend cannot run here. */
  checkAvailability(): Promise<Availability>;
  /** Registers the tfjs backend (tf.registerBackend) if it is not registered yet. Called once. */
  setup(): Promise<void>;
  capabilities(): BackendCapabilities;
  /** Kernels registered on `tfjsName` after `setup`, replacing any tfjs kernel of the same name. */
  kernels?: () => KernelSpec[];
}

export class BackendError extends PatchflowError {
  override name = 'BackendError';
}

// process-wide, so that a second copy of this package (see singleton.ts) registers into the same place
const plugins = processSingleton('@patchflow/tensor', pkg.version, import.meta.url, 'backends', () => new Map<string, BackendPlugin>());
const ready = processSingleton('@patchflow/tensor', pkg.version, import.meta.url, 'backends-ready', () => new Set<string>());

export function registerBackend(plugin: BackendPlugin): void {
  if (!/^[a-z][a-z0-9-]*$/.test(plugin.name)) throw new BackendError(`invalid backend name "${plugin.name}"`);
  plugins.set(plugin.name, plugin);
  ready.delete(plugin.name);
}

export function listBackends(): BackendPlugin[] {
  return [...plugins.values()];
}

export function getBackendPlugin(name: string): BackendPlugin {
  const p = plugins.get(name);
  if (!p) {
    throw new BackendError(`unknown backend "${name}" (known: ${[...plugins.keys()].join(', ') || 'none'})`);
  }
  return p;
}

/** Registers the plugin's tfjs backend and kernels without making it current. */
export async function prepareBackend(name: string): Promise<BackendPlugin> {
  const p = getBackendPlugin(name);
  if (ready.has(name)) return p;
  const avail = await p.checkAvailability();
  if (!avail.ok) throw new BackendError(`backend "${name}" is not available: ${avail.reason}`);
  await p.setup();
  for (const k of p.kernels?.() ?? []) {
    if (tf.getKernel(k.kernelName, p.tfjsName)) tf.unregisterKernel(k.kernelName, p.tfjsName);
    tf.registerKernel({ ...k, backendName: p.tfjsName });
  }
  ready.add(name);
  return p;
}

/** Makes `name` the current backend: availability check, setup, kernels, tf.setBackend. */
export async function useBackend(name: string): Promise<BackendPlugin> {
  const p = await prepareBackend(name);
  const ok = await tf.setBackend(p.tfjsName);
  if (!ok) throw new BackendError(`backend "${name}" failed to initialise (tfjs backend "${p.tfjsName}")`);
  await tf.ready();
  return p;
}

/** The patchflow name of the current backend, if it was selected through `useBackend`. */
export function currentBackendName(): string | undefined {
  const tfName = tf.getBackend();
  for (const p of plugins.values()) if (p.tfjsName === tfName && ready.has(p.name)) return p.name;
  return undefined;
}
