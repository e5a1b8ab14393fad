/**
 * The trainer, the patch-level plugin and the sparsity plugin (block masks on the WGSL block-sparse
 * kernel; RigL) on the webgpu backend (lavapipe in CI): the same tiny run on webgpu and on cpu gives
 * the same losses within fp32 tolerance. Skips (with the reason) when no
 * WebGPU adapter is available, except under CI, where it must run.
 */
import { describe, it, expect, inject } from 'vitest';
import '@patchflow/backend-gpu';
import { train, resolveConfig, type TrainEvent, type TrainerPlugin } from '@patchflow/trainer';
import { patchTraining } from '@patchflow/patch-training';
import { sparseTraining } from '@patchflow/sparsity';

const IN_CI = !!process.env.CI && !/^(0|false|no)$/i.test(process.env.CI);
// probed once by test/global-setup.ts, which prints the one line that says these tests are skipped
const avail = inject('webgpu');
if (!avail.ok && IN_CI) throw new Error(`webgpu must be available in CI: ${avail.reason}`);

const text = Array.from({ length: 300 }, (_, i) => `row ${i}: ${'abcdefgh'.slice(i % 5)} ${i * 7}\n`).join('');

async function losses(backend: string, plugins: TrainerPlugin[]): Promise<{ steps: [string, number][]; val: number; overrides: string[] }> {
  const config = resolveConfig({ model: { nLayer: 1, nHead: 2, dModel: 16, seqLen: 8 }, batchSize: 2, steps: 6, evalEvery: 0, evalBatches: 1, checkpointEvery: 0, backend });
  const ev: TrainEvent[] = [];
  let overrides: string[] = [];
  const spy: TrainerPlugin = { name: 'spy', plan: (p) => p.map((x) => ({ ...x, plugins: { ...x.plugins, spy: {} } })), afterStep: (ctx) => void (overrides = ctx.model.matMulOverrides()) };
  const r = await train({ config, corpus: { name: 't', text }, plugins: [...plugins, spy], onEvent: (e) => ev.push(e) });
  r.model.dispose();
  return { steps: ev.flatMap((e) => (e.type === 'step' ? [[e.phase, e.loss] as [string, number]] : [])), val: r.valLoss, overrides };
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

  it('sparse runs (block masks on the block-sparse kernels; RigL) match the cpu backend', async () => {
    const runs: [string, () => TrainerPlugin[]][] = [
      ['block', () => [sparseTraining({ sparsity: 0.75, pattern: 'block:8' })]],
      ['rigl', () => [sparseTraining({ sparsity: 0.5, pattern: 'unstructured', mode: 'rigl', interval: 2, end: 1 })]],
    ];
    for (const [name, make] of runs) {
      const gpu = await losses('webgpu', make());
      const cpu = await losses('cpu', make());
      if (name === 'block') expect(gpu.overrides.length, 'block-masked matrices on the webgpu kernel').toBe(4);
      gpu.steps.forEach(([, l], i) => expect(Math.abs(l - cpu.steps[i]![1]), `${name} step ${i + 1}`).toBeLessThan(2e-3));
      expect(Math.abs(gpu.val - cpu.val)).toBeLessThan(2e-3);
    }
  });
});
