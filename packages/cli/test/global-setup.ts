/**
 * Probes WebGPU once (in a child process: Dawn's native logging stays out of the test output) for
 * the CLI's webgpu training tests, which read the answer with `inject('webgpu')`.
 */
import { webgpuGlobalSetup } from '@patchflow/test-fixtures';
import { webgpuBackend } from '@patchflow/backend-gpu';

declare module 'vitest' {
  export interface ProvidedContext {
    webgpu: { ok: boolean; reason?: string };
  }
}

export default webgpuGlobalSetup('@patchflow/cli', () => webgpuBackend.checkAvailability());
