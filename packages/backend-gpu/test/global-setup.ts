/**
 * Probes WebGPU once for the whole package (in a child process, so Dawn's native logging stays out
 * of the test output) and hands the answer to every test file through `inject('webgpu')`. Without
 * an adapter the GPU suites skip, and this prints the one line that says so and how to enable them;
 * under CI they must run, and the test files fail instead.
 */
import type { TestProject } from 'vitest/node';
import { webgpuBackend } from '../src/index.js';

declare module 'vitest' {
  export interface ProvidedContext {
    webgpu: { ok: boolean; reason?: string };
  }
}

export default async function setup(project: TestProject): Promise<void> {
  const a = await webgpuBackend.checkAvailability();
  project.provide('webgpu', a.ok ? { ok: true } : { ok: false, reason: a.reason });
  if (!a.ok) {
    process.stderr.write(
      `[@patchflow/backend-gpu] WebGPU tests skipped: ${a.reason}. To run them, install Mesa's lavapipe: ` +
        'bash .ci/run lavapipe (as root, or with sudo)\n',
    );
  }
}
