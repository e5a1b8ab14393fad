/**
 * Probes WebGPU once (in a child process: Dawn's native logging stays out of the test output) for
 * the CLI's webgpu training tests, which read the answer with `inject('webgpu')`. Without an adapter
 * they skip and this prints the one line that says so; under CI they must run.
 */
import type { TestProject } from 'vitest/node';
import { webgpuBackend } from '@patchflow/backend-gpu';

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
      `[@patchflow/cli] WebGPU training tests skipped: ${a.reason}. To run them, install Mesa's lavapipe: ` +
        'bash .ci/run lavapipe (as root, or with sudo)\n',
    );
  }
}
