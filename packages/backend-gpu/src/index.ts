/**
 * @patchflow/backend-gpu: the `webgpu` backend (tfjs-backend-webgpu) for patchflow. Importing this
 * module registers it with @patchflow/tensor's registry; it loads nothing heavy until
 * `useBackend('webgpu')` (or `checkAvailability` / `gpuInfo`) runs.
 */
import { registerBackend } from '@patchflow/tensor';
import { createWebGpuBackend, type GpuInfo } from './backend.js';

export { createWebGpuBackend, WEBGPU_MAX_RANK } from './backend.js';
export type { GpuF16Info, GpuInfo, WebGpuBackendOptions, WebGpuBackendPlugin } from './backend.js';
export { defaultGpu, GpuLoadError } from './gpu.js';
export type { GpuAdapterInfoLike, GpuAdapterLike, GpuLike } from './gpu.js';
export * from './compiled/index.js';

/** The default `webgpu` plugin, registered on import. */
export const webgpuBackend = createWebGpuBackend();

/**
 * Facts about the WebGPU adapter this process would use (vendor, architecture, device, description,
 * fallback/software or not, features, buffer and workgroup limits), or `{available: false, reason}`.
 * Never throws. Meant for logs of runs on real GPUs: `console.log(await gpuInfo())`.
 */
export function gpuInfo(): Promise<GpuInfo> {
  return webgpuBackend.gpuInfo();
}

registerBackend(webgpuBackend);
export * from './step/program.js';
export * from './step/compiler.js';
export * from './step/bench.js';
export * from './step/precision.js';
