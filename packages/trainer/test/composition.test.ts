/**
 * Composition from config alone: the plugin registry builds `config.plugins` in the declared order,
 * rejects unknown names and duplicate plugins, a plugin without a plan hook is still called, and a
 * backend's run plugins join every run on it.
 */
import { describe, expect, it } from 'vitest';
import { registerBackend, cpuBackend } from '@patchflow/tensor';
import {
  ConfigError,
  PluginError,
  buildPlan,
  checkSettingKeys,
  pluginsFromConfig,
  registerPlugin,
  registerRunPlugins,
  resolveConfig,
  train,
  type TrainerPlugin,
} from '../src/index.js';

const text = Array.from({ length: 200 }, (_, i) => `line ${i}: the whale swam ${i % 7} miles.\n`).join('');
const config = (over: Record<string, unknown> = {}) =>
  resolveConfig({ model: { nLayer: 1, nHead: 2, dModel: 16, seqLen: 16 }, batchSize: 2, steps: 3, evalEvery: 0, evalBatches: 1, checkpointEvery: 0 }, over);

const probe = (name: string): TrainerPlugin => ({ name, plan: (p) => p.map((x) => ({ ...x, plugins: { ...x.plugins, [name]: { made: true } } })) });
registerPlugin({ name: 'test-last', order: 'last', create: () => probe('test-last') });
registerPlugin({ name: 'test-mid', create: (s) => (checkSettingKeys('test-mid', s, ['x']), probe('test-mid')) });
registerPlugin({ name: 'test-first', order: 'first', create: () => probe('test-first') });

describe('pluginsFromConfig', () => {
  it('builds each entry by its definition, ordered first / between (config order) / last', () => {
    const cfg = config({ plugins: { 'test-last': {}, neftune: { alpha: 3 }, 'test-mid': { x: 1 }, 'test-first': {} } });
    expect(pluginsFromConfig(cfg).map((p) => p.name)).toEqual(['test-first', 'neftune', 'test-mid', 'test-last']);
  });

  it('an unknown plugin name lists the registered ones', () => {
    expect(() => pluginsFromConfig(config({ plugins: { nope: {} } }))).toThrow(ConfigError);
    expect(() => pluginsFromConfig(config({ plugins: { nope: {} } }))).toThrow(/unknown plugin "nope" under plugins \(registered: .*neftune.*label-smoothing.*test-first/);
  });

  it('a definition validates its settings', () => {
    expect(() => pluginsFromConfig(config({ plugins: { 'test-mid': { y: 1 } } }))).toThrow(/unknown key "plugins\.test-mid\.y" \(known: x\)/);
    expect(() => pluginsFromConfig(config({ plugins: { neftune: { alpha: -1 } } }))).toThrow(/plugins\.neftune\.alpha must be a number > 0, got -1/);
  });

  it('registerPlugin refuses names a config key cannot carry', () => {
    expect(() => registerPlugin({ name: 'Bad Name', create: () => probe('x') })).toThrow(PluginError);
  });
});

describe('buildPlan', () => {
  it('two plugins with one name are refused', () => {
    expect(() => buildPlan([probe('a'), probe('a')], config())).toThrow(/two plugins are named "a"/);
  });

  it('a plugin without a plan hook is active in every phase (with settings {}) and its hooks run', async () => {
    let after = 0;
    const plain: TrainerPlugin = { name: 'plain', afterStep: () => void after++ };
    const plan = buildPlan([plain], config());
    expect(plan.map((p) => p.plugins.plain)).toEqual([{}]);
    const r = await train({ config: config(), corpus: { name: 't', text }, plugins: [plain] });
    r.model.dispose();
    expect(after).toBe(3);
  });
});

describe('train({ config }) composes from config.plugins; a backend adds its run plugins', () => {
  it('config entries become the run plugins, in order, then the backend\'s', async () => {
    registerBackend({ ...cpuBackend, name: 'cpu-with-clock' });
    let ticks = 0;
    registerRunPlugins('cpu-with-clock', (cfg) => [{ name: 'clock', afterStep: () => void (ticks += cfg.batchSize) }]);
    const r = await train({ config: config({ backend: 'cpu-with-clock', plugins: { 'test-last': {}, neftune: {} } }), corpus: { name: 't', text } });
    r.model.dispose();
    expect(r.plugins.map((p) => p.name)).toEqual(['neftune', 'test-last', 'clock']);
    expect(r.phases[0]!.plugins['test-last']).toEqual({ made: true });
    expect(ticks).toBe(3 * 2);
  });
});
