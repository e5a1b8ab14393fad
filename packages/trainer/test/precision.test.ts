/**
 * precision (config key, 'fp32' | 'f16') in the trainer: f16 needs a compiled step, and the trainer
 * books mixed-precision steps: the loss scale and skipped steps go to metrics.jsonl, a skipped step
 * (non-finite gradient norm from an overflow) is no divergence unless the loss scale is down to 1.
 * The compiled step here is a fake registered for the cpu backend (the WebGPU one is tested in
 * backend-gpu's compiled-f16.test.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir, tinyConfigWith, whaleCorpus } from '@patchflow/test-fixtures';
import { ConfigError, DivergenceError, registerStepCompiler, resolveConfig, train, type CompiledStepResult, type TrainEvent } from '../src/index.js';

const tinyConfig = tinyConfigWith(resolveConfig);
const corpus = whaleCorpus;

describe('precision without a compiled step', () => {
  it("f16 on a backend without a step compiler is a ConfigError before step 1", async () => {
    const events: TrainEvent[] = [];
    const run = train({ config: tinyConfig({ steps: 3, precision: 'f16', backend: 'tfjs-cpu' }), corpus, onEvent: (e) => events.push(e) });
    await expect(run).rejects.toThrow(ConfigError);
    await expect(train({ config: tinyConfig({ steps: 3, precision: 'f16', backend: 'tfjs-cpu' }), corpus })).rejects.toThrow(
      /^invalid config: precision 'f16' needs a backend with a compiled step \(webgpu\); backend "tfjs-cpu" has none$/,
    );
    expect(events.filter((e) => e.type === 'step')).toHaveLength(0);
  });
});

describe('precision f16 on a (fake) compiled step', () => {
  // outcome of each submitted step, in order
  let script: Partial<CompiledStepResult>[] = [];
  let submitted = 0;
  registerStepCompiler('cpu', {
    compile: async () => ({
      description: 'fake f16 step',
      stepsInFlight: 1,
      load: async () => {},
      store: async () => {},
      dispose: () => {},
      submit: async () => {
        const r = { loss: 3, gradNorm: 1, ...script[submitted++ % script.length] };
        return { done: Promise.resolve(r as CompiledStepResult) };
      },
    }),
  });

  it('writes the loss scale and skipped steps to metrics.jsonl; a skipped step is not a divergence', async () => {
    script = [
      { lossScale: 16384, skipped: true, skippedSteps: 1, gradNorm: NaN },
      { lossScale: 16384, skipped: false, skippedSteps: 1 },
      { lossScale: 32768, skipped: false, skippedSteps: 1 },
    ];
    submitted = 0;
    const dir = tempDir('pf-precision-');
    const r = await train({ config: tinyConfig({ steps: 3, precision: 'f16', evalEvery: 0, checkpointEvery: 0 }), corpus, outDir: dir });
    const rows = fs
      .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((x) => x.type === 'train');
    expect(rows.map((x) => [x.lossScale, x.skipped, x.skippedSteps])).toEqual([
      [16384, 1, 1],
      [16384, 0, 1],
      [32768, 0, 1],
    ]);
    expect(r.steps).toBe(3);
    r.model.dispose();
  });

  it('an overflow with the loss scale at its minimum is a divergence', async () => {
    script = [{ lossScale: 1, skipped: true, skippedSteps: 9, gradNorm: Infinity }];
    submitted = 0;
    await expect(train({ config: tinyConfig({ steps: 2, precision: 'f16', evalEvery: 0, checkpointEvery: 0 }), corpus })).rejects.toThrow(DivergenceError);
  });

  it('f16 with compile: false is a ConfigError', async () => {
    await expect(train({ config: tinyConfig({ steps: 2, precision: 'f16', compile: false }), corpus })).rejects.toThrow(/precision 'f16' runs only on the compiled step/);
  });
});
