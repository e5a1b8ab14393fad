/**
 * The trainer and the patch-level plugin on the webgpu backend (lavapipe in CI): the same tiny run
 * on webgpu and on cpu gives the same losses within fp32 tolerance. Skips (with the reason) when no
 * WebGPU adapter is available, except under CI, where it must run.
 */
import { describe, it, expect } from 'vitest';
import '@patchflow/backend-gpu';
import { getBackendPlugin } from '@patchflow/tensor';
import { train, resolveConfig, type TrainEvent, type TrainerPlugin } from '@patchflow/trainer';
import { patchTraining } from '@patchflow/patch-training';

const IN_CI = !!process.env.CI && !/^(0|false|no)$/i.test(process.env.CI);
const avail = await getBackendPlugin('webgpu').checkAvailability();
if (!avail.ok) {
  if (IN_CI) throw new Error(`webgpu must be available in CI: ${avail.reason}`);
  console.warn(`skipping webgpu training tests: ${avail.reason}`);
}

const text = Array.from({ length: 300 }, (_, i) => `row ${i}: ${'abcdefgh'.slice(i % 5)} ${i * 7}\n`).join('');

async function losses(backend: string, plugins: TrainerPlugin[]): Promise<{ steps: [string, number][]; val: number }> {
  const config = resolveConfig({ model: { nLayer: 1, nHead: 2, dModel: 16, seqLen: 8 }, batchSize: 2, steps: 6, evalEvery: 0, evalBatches: 1, checkpointEvery: 0, backend });
  const ev: TrainEvent[] = [];
  const r = await train({ config, corpus: { name: 't', text }, plugins, onEvent: (e) => ev.push(e) });
  r.model.dispose();
  return { steps: ev.flatMap((e) => (e.type === 'step' ? [[e.phase, e.loss] as [string, number]] : [])), val: r.valLoss };
}

describe.skipIf(!avail.ok)('training on webgpu', { timeout: 120_000 }, () => {
  it('token-level and patch-level (K=2, λ=1/2) runs match the cpu backend', async () => {
    for (const plugins of [[], [patchTraining({ patchSize: 2, fraction: 0.5 })]]) {
      const gpu = await losses('webgpu', plugins);
      const cpu = await losses('cpu', plugins);
      expect(gpu.steps.map((s) => s[0])).toEqual(cpu.steps.map((s) => s[0]));
      if (plugins.length) expect(new Set(gpu.steps.map((s) => s[0]))).toEqual(new Set(['patch', 'token']));
      gpu.steps.forEach(([, l], i) => expect(Math.abs(l - cpu.steps[i]![1])).toBeLessThan(2e-3));
      expect(Math.abs(gpu.val - cpu.val)).toBeLessThan(2e-3);
    }
  });
});
