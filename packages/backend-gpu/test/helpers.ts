import { expect, inject } from 'vitest';
import { tf, useBackend } from '@patchflow/tensor';
import { randn } from '@patchflow/test-fixtures';

export { IN_CI, randInt, randn } from '@patchflow/test-fixtures';

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
/** A float tensor of `shape` with seeded values (created on the current backend). */
export const rt = (shape: number[], seed: number, scale = 1) => tf.tensor(randn(size(shape), seed, scale), shape);

type Out = tf.Tensor | tf.Tensor[] | tf.NamedTensorMap;
export type Run = { shape: number[]; values: Float32Array | Int32Array | Uint8Array }[];

async function runOn(backend: 'cpu' | 'webgpu', fn: () => Out): Promise<Run> {
  await useBackend(backend);
  const out = tf.tidy(fn);
  const list = out instanceof tf.Tensor ? [out] : Array.isArray(out) ? out : Object.values(out);
  const res: Run = [];
  for (const t of list) {
    res.push({ shape: t.shape, values: (await t.data()) as Float32Array | Int32Array | Uint8Array });
    t.dispose();
  }
  return res;
}

/** Runs `fn` (which must build its inputs itself) on the cpu backend and on webgpu. */
export async function onBoth(fn: () => Out): Promise<{ cpu: Run; gpu: Run }> {
  const cpu = await runOn('cpu', fn);
  const gpu = await runOn('webgpu', fn);
  return { cpu, gpu };
}

/** Elementwise |got - want| <= atol + rtol * |want|, with the worst offender in the message. */
export function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, atol = 1e-4, rtol = 1e-4): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    const excess = Number.isNaN(g) !== Number.isNaN(w) ? Infinity : Math.abs(g - w) - (atol + rtol * Math.abs(w));
    if (excess > worstExcess || (excess === Infinity && worstExcess !== Infinity)) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    expect.fail(`${what}: element ${worst}: webgpu ${got[worst]} vs cpu ${want[worst]} (atol ${atol}, rtol ${rtol})`);
  }
}

/** Compares every output of `fn` on webgpu against cpu; also guards against trivially-zero outputs. */
export async function compareBackends(what: string, fn: () => Out, atol = 1e-4, rtol = 1e-4): Promise<{ cpu: Run; gpu: Run }> {
  const r = await onBoth(fn);
  expect(r.gpu.length, `${what}: number of outputs`).toBe(r.cpu.length);
  r.cpu.forEach((c, i) => {
    expect(r.gpu[i]!.shape, `${what}[${i}]: shape`).toEqual(c.shape);
    expectClose(r.gpu[i]!.values, c.values, `${what}[${i}]`, atol, rtol);
    if (c.values.length > 1) {
      expect(c.values.some((v) => v !== 0), `${what}[${i}]: the reference is all zeros, the test proves nothing`).toBe(true);
    }
  });
  return r;
}

/**
 * The availability gate shared by the GPU test files: probed once per run by test/global-setup.ts,
 * which also prints the one line that says the suites are skipped.
 */
export async function gpuGate(): Promise<{ ok: boolean; reason?: string }> {
  return inject('webgpu');
}
