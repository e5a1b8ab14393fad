/**
 * The embedded default backend `cpu`: tfjs's MathBackendCPU (memory management, the long tail of
 * kernels) registered under its own tfjs name, with patchflow's hot kernels replacing or adding to
 * the stock ones. The hot kernels are native (native/*.cc, a Node-API addon: a prebuilt binary shipped
 * in the package, or built from source at first use; see native.ts); without the addon the backend
 * runs on stock kernels and says so.
 * `tfjs-cpu` is stock tfjs's cpu backend, kept for comparison.
 */
import * as tf from '@tensorflow/tfjs-core';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import type { BackendPlugin, KernelSpec } from '../registry.js';
import { FUSED_OPS } from '../ops.js';
import { nativeAddon, nativeInfo } from './native.js';
import { nativeKernels } from './kernels.js';

export { captureNativeStderr, nativeInfo, setNativeThreads, type NativeInfo } from './native.js';

export const CPU_TFJS_NAME = 'patchflow-cpu';

function registerCpuClone(): void {
  if (tf.findBackendFactory(CPU_TFJS_NAME)) return;
  tf.registerBackend(CPU_TFJS_NAME, () => new MathBackendCPU(), 1);
  for (const k of tf.getKernelsForBackend('cpu')) {
    tf.registerKernel({ ...k, backendName: CPU_TFJS_NAME });
  }
}

let cachedKernels: KernelSpec[] | undefined;
function hotKernels(): KernelSpec[] {
  cachedKernels ??= nativeKernels(nativeAddon());
  return cachedKernels;
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
    const kernels = hotKernels();
    const info = nativeInfo();
    const notes = info.loaded
      ? [
          `native kernels loaded (${info.simd}, ${info.threads} thread${info.threads === 1 ? '' : 's'}; PATCHFLOW_THREADS to change)`,
          ...(info.openmpNote ? [info.openmpNote] : []),
          `native tfjs kernels: ${kernels.filter((k) => !k.kernelName.startsWith('Pf')).map((k) => k.kernelName).join(', ')}`,
        ]
      : [info.reason ?? 'native kernels not loaded; using stock tfjs kernels'];
    return {
      device: 'cpu',
      maxRank: 6,
      fusedOps: [...FUSED_OPS].filter((n) => kernels.some((k) => k.kernelName === n)),
      notes,
    };
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
