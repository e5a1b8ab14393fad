/**
 * The embedded default backend `cpu`: tfjs's MathBackendCPU (memory management, the long tail of
 * kernels) registered under its own tfjs name, with patchflow's hot kernels replacing or adding to
 * the stock ones. `tfjs-cpu` is stock tfjs's cpu backend, kept for comparison.
 */
import * as tf from '@tensorflow/tfjs-core';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { BackendPlugin, KernelSpec } from '../registry.js';
import { FUSED_OPS } from '../ops.js';

export const CPU_TFJS_NAME = 'patchflow-cpu';

function registerCpuClone(): void {
  if (tf.findBackendFactory(CPU_TFJS_NAME)) return;
  tf.registerBackend(CPU_TFJS_NAME, () => new MathBackendCPU(), 1);
  for (const k of tf.getKernelsForBackend('cpu')) {
    tf.registerKernel({ ...k, backendName: CPU_TFJS_NAME });
  }
}

function hotKernels(): KernelSpec[] {
  return [];
}

export const cpuBackend: BackendPlugin = {
  name: 'cpu',
  description: 'patchflow cpu: tfjs cpu backend with patchflow native kernels (the embedded default)',
  tfjsName: CPU_TFJS_NAME,
  async checkAvailability() {
    return { ok: true };
  },
  async setup() {
    registerCpuClone();
  },
  capabilities() {
    return { device: 'cpu', maxRank: 6, fusedOps: [...FUSED_OPS].filter((n) => hotKernels().some((k) => k.kernelName === n)) };
  },
  kernels: hotKernels,
};

export const stockCpuBackend: BackendPlugin = {
  name: 'tfjs-cpu',
  description: 'stock @tensorflow/tfjs-backend-cpu (pure JavaScript), for comparison',
  tfjsName: 'cpu',
  async checkAvailability() {
    return { ok: true };
  },
  async setup() {},
  capabilities() {
    return { device: 'cpu', maxRank: 6, fusedOps: [] };
  },
};
