/**
 * The WebGPU gate of a package's GPU suites: its vitest `globalSetup` probes once (the backend's
 * checkAvailability, which asks Dawn in a child process), hands the answer to every test file through
 * `inject('webgpu')`, and prints one line when the suites skip. Under CI they must run: the test
 * files fail instead of skipping.
 */

export type GpuAvailability = { ok: true } | { ok: false; reason: string };

/** True when CI is set (and not to a false-y word): then GPU tests must run, never skip. */
export const IN_CI = !!process.env.CI && !/^(0|false|no)$/i.test(process.env.CI);

export interface ProvideTarget {
  provide(key: 'webgpu', value: { ok: boolean; reason?: string }): void;
}

/** A vitest globalSetup that probes with `check` and says once, for `label`'s suites, why they skip. */
export function webgpuGlobalSetup(label: string, check: () => Promise<GpuAvailability>): (project: ProvideTarget) => Promise<void> {
  return async (project) => {
    const a = await check();
    project.provide('webgpu', a.ok ? { ok: true } : { ok: false, reason: a.reason });
    if (!a.ok) {
      process.stderr.write(`[${label}] WebGPU suites skipped: ${a.reason}. To run them, install Mesa's lavapipe: bash .ci/run lavapipe (as root, or with sudo)\n`);
    }
  };
}
