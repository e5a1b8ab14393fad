/**
 * Probes WebGPU once for the whole package (in a child process, so Dawn's native logging stays out
 * of the test output); test files read the answer with `inject('webgpu')` (helpers.ts gpuGate).
 */
import { webgpuGlobalSetup } from '@patchflow/test-fixtures';
import { webgpuBackend } from '../src/index.js';

declare module 'vitest' {
  export interface ProvidedContext {
    webgpu: { ok: boolean; reason?: string };
  }
}

export default webgpuGlobalSetup('@patchflow/backend-gpu', () => webgpuBackend.checkAvailability());
