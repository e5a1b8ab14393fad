import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { getBackendPlugin, useBackend } from '@patchflow/tensor';
import { resolveConfig, train, type TrainEvent } from '@patchflow/trainer';
import { numericPaths, resolveModel } from '@patchflow/dataflow-runtime';
import { HARDWARE_NAMES, hardwareDir, loadHardware, rduSimClock, simSettingsFromEnv, simulateModel } from '../src/index.js';

describe('hardware descriptions', () => {
  it('every shipped number cites a source', () => {
    for (const n of HARDWARE_NAMES) {
      const raw = JSON.parse(fs.readFileSync(`${hardwareDir()}${n}.json`, 'utf8'));
      const h = loadHardware(n);
      for (const p of numericPaths(raw)) expect(h.sources[p], `${n}: ${p}`).toMatch(/\S/);
    }
  });
  it('a bad file names the file and the field', () => {
    const f = `${fs.mkdtempSync('/tmp/pf-hw-')}/bad.json`;
    const raw = JSON.parse(fs.readFileSync(`${hardwareDir()}sn10.json`, 'utf8'));
    raw.onChip.capacityBytes = 'lots';
    fs.writeFileSync(f, JSON.stringify(raw));
    expect(() => loadHardware(f)).toThrow(/bad\.json: hardware onChip\.capacityBytes must be a number/);
    fs.writeFileSync(f, '{ nope');
    expect(() => loadHardware(f)).toThrow(/not valid JSON/);
    expect(() => loadHardware('sn99')).toThrow(/neither a shipped description/);
  });
  it('GPT 13B simulates in well under a second', () => {
    const t0 = performance.now();
    const r = simulateModel(resolveModel('gpt-13b'), { batch: 8, sparsity: 0.875 }, loadHardware('sn30'), 'dataflow');
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(r.stepSeconds).toBeGreaterThan(0);
  });
  it('an RDU has no fp32 rate: asking for it is an error naming the field', () => {
    expect(() => simulateModel(resolveModel('gpt-124m'), { batch: 1, precision: 'fp32' }, loadHardware('sn30'), 'kbk')).toThrow(/compute\.matmulTflops\.fp32/);
  });
  it('KBK on a GPU simulates the ops PyTorch eager launches; DF and KBK on an RDU the fused graph', () => {
    const m = resolveModel('gpt-124m');
    const opts = { batch: 1, seqLen: 128, precision: 'bf16' as const };
    const k = simulateModel(m, opts, loadHardware('h100'), 'kbk');
    expect(k.model.eager).toBe(true);
    expect(k.groups.find((g) => g.group === 'cast')!.ops).toBe(22 * 12 + 6); // autocast casts, as profiled
    expect(simulateModel(m, opts, loadHardware('h100'), 'dataflow').model.eager).toBe(false);
    expect(simulateModel(m, opts, loadHardware('sn30'), 'kbk').model.eager).toBe(false);
    const fused = simulateModel(m, { ...opts, eager: false }, loadHardware('h100'), 'kbk');
    expect(fused.model.eager).toBe(false);
    expect(fused.kernels).toBeLessThan(k.kernels);
    expect(fused.stepSeconds).toBeLessThan(k.stepSeconds);
  });
  it('env settings are checked', () => {
    expect(() => simSettingsFromEnv({ PATCHFLOW_SIM_MODE: 'warp' })).toThrow(/PATCHFLOW_SIM_MODE/);
    expect(simSettingsFromEnv({})).toEqual({ hw: 'sn30', mode: 'dataflow' });
  });
});

describe('rdu-sim backend', () => {
  it('is registered as a simulated device computing on the cpu backend', async () => {
    const b = getBackendPlugin('rdu-sim');
    expect(b.capabilities().device).toBe('simulated');
    expect(b.tfjsName).toBe(getBackendPlugin('cpu').tfjsName);
    await useBackend('rdu-sim');
  });

  it('trains for real while the simulated clock advances by the simulated step time', async () => {
    const text = Array.from({ length: 200 }, (_, i) => `line ${i}: the whale swam ${i % 7} miles.\n`).join('');
    const config = resolveConfig({ model: { nLayer: 1, nHead: 2, dModel: 16, seqLen: 16 }, batchSize: 4, steps: 3, evalEvery: 0, evalBatches: 1, checkpointEvery: 0, backend: 'rdu-sim' });
    const clock = rduSimClock({ hw: 'sn30', mode: 'dataflow' });
    const steps: Extract<TrainEvent, { type: 'step' }>[] = [];
    const r = await train({ config, plugins: [clock], corpus: { name: 't', text }, onEvent: (e) => e.type === 'step' && steps.push(e) });
    expect(steps.length).toBe(3);
    expect(steps.every((s) => Number.isFinite(s.loss))).toBe(true);
    const per = steps[0]!.extra.sim_step_s!;
    expect(per).toBeGreaterThan(0);
    expect(steps[2]!.extra.sim_clock_s).toBeCloseTo(3 * per, 12);
    expect(clock.clockSeconds).toBeCloseTo(3 * per, 12);
    expect(steps[0]!.extra.sim_onchip_peak_MB).toBeGreaterThan(0);
    expect(clock.summary().join('\n')).toMatch(/SN30.*3 steps/);
    r.model.dispose();
  });
});
