import { describe, it, expect } from 'vitest';
import { resolveConfig, finalizeModelConfig, ConfigError, DEFAULT_CONFIG } from '../src/index.js';

describe('config validation', () => {
  it('merges patches over the defaults, later ones winning', () => {
    const c = resolveConfig({ steps: 10, optim: { lr: 1e-3 } }, { steps: 20 });
    expect(c.steps).toBe(20);
    expect(c.optim.lr).toBe(1e-3);
    expect(c.optim.beta1).toBe(DEFAULT_CONFIG.optim.beta1);
    expect(c.model).toEqual(DEFAULT_CONFIG.model);
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['zero lr', { optim: { lr: 0 } }, /optim\.lr must be > 0/],
    ['negative lr', { optim: { lr: -1e-3 } }, /optim\.lr must be > 0/],
    ['unknown top-level key', { stepz: 3 }, /unknown key "stepz"/],
    ['unknown model key', { model: { layers: 3 } }, /unknown key "model\.layers"/],
    ['non-integer steps', { steps: 2.5 }, /steps must be an integer/],
    ['string where a number goes', { batchSize: '8' }, /batchSize must be a finite number/],
    ['bad positions', { model: { positions: 'alibi' } }, /model\.positions must be one of learned, rotary/],
    ['model not an object', { model: 3 }, /model must be an object/],
    ['unknown precision', { precision: 'bf16' }, /^invalid config: precision must be one of fp32, f16, got "bf16"$/],
  ];
  for (const [what, patch, re] of bad) {
    it(`rejects ${what} with a ConfigError naming the key`, () => {
      expect(() => resolveConfig(patch)).toThrow(ConfigError);
      expect(() => resolveConfig(patch)).toThrow(re);
    });
  }

  it('rejects heads that do not divide the width', () => {
    const m = resolveConfig({ model: { dModel: 100, nHead: 3 } }).model;
    expect(() => finalizeModelConfig(m, 256)).toThrow(/nHead \(3\) must divide model\.dModel \(100\)/);
  });

  it('fills vocabSize and dFF from the tokenizer and width', () => {
    const m = finalizeModelConfig(resolveConfig({ model: { dModel: 64, nHead: 4 } }).model, 256);
    expect(m.vocabSize).toBe(256);
    expect(m.dFF).toBe(256);
    expect(() => finalizeModelConfig({ ...m, vocabSize: 100 }, 256)).toThrow(/smaller than the tokenizer/);
  });
});
