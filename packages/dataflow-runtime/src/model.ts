/** Model shapes: @patchflow/trainer's ModelConfig, presets, and validation that names the bad field. */
import { ConfigError, type ModelConfig } from '@patchflow/trainer';

/** Thrown for a bad model, hardware or option value (the trainer's ConfigError); the message names the field. */
export { ConfigError };

/** A fully resolved ModelConfig (dFF and vocabSize filled in). */
export type GptShape = ModelConfig;

/**
 * Presets. gpt-13b is GPT-3 13B (Brown et al. 2020, table 2.1: 40 layers, d 5120, 40 heads, context 2048)
 * with the GPT-2 vocabulary padded to 50,304; the three small ones are the sizes of docs/bench/pytorch_gpt_step_h100.json.
 */
export const MODEL_PRESETS: Record<string, GptShape> = {
  'gpt-124m': { vocabSize: 50304, nLayer: 12, nHead: 12, dModel: 768, dFF: 3072, seqLen: 1024, positions: 'learned', tiedEmbeddings: true },
  'gpt-355m': { vocabSize: 50304, nLayer: 24, nHead: 16, dModel: 1024, dFF: 4096, seqLen: 1024, positions: 'learned', tiedEmbeddings: true },
  'gpt-1.3b': { vocabSize: 50304, nLayer: 24, nHead: 16, dModel: 2048, dFF: 8192, seqLen: 1024, positions: 'learned', tiedEmbeddings: true },
  'gpt-13b': { vocabSize: 50304, nLayer: 40, nHead: 40, dModel: 5120, dFF: 20480, seqLen: 2048, positions: 'learned', tiedEmbeddings: true },
  /** patchflow's default model (byte vocabulary). */
  'patchflow-default': { vocabSize: 256, nLayer: 4, nHead: 4, dModel: 256, dFF: 1024, seqLen: 128, positions: 'learned', tiedEmbeddings: true },
};

const INT_FIELDS = ['vocabSize', 'nLayer', 'nHead', 'dModel', 'seqLen'] as const;

/**
 * Resolves a model description: a train config's `model` section (keys of ModelConfig; vocabSize required
 * here since there is no tokenizer; dFF defaults to 4·dModel), or a preset name. `where` prefixes messages.
 */
export function resolveModel(input: unknown, where = 'model'): GptShape {
  if (typeof input === 'string') {
    const p = MODEL_PRESETS[input];
    if (!p) throw new ConfigError(`unknown model preset "${input}" (known: ${Object.keys(MODEL_PRESETS).join(', ')})`);
    return { ...p };
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new ConfigError(`${where} must be an object or a preset name`);
  const o = input as Record<string, unknown>;
  const known = ['vocabSize', 'nLayer', 'nHead', 'dModel', 'dFF', 'seqLen', 'positions', 'tiedEmbeddings'];
  for (const k of Object.keys(o)) if (!known.includes(k)) throw new ConfigError(`${where}.${k}: unknown key (known: ${known.join(', ')})`);
  for (const k of INT_FIELDS) {
    const v = o[k];
    if (v === undefined && k === 'seqLen') continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new ConfigError(`${where}.${k} must be an integer >= 1, got ${JSON.stringify(v)}`);
  }
  if (o.dFF !== undefined && (typeof o.dFF !== 'number' || !Number.isInteger(o.dFF) || o.dFF < 0)) throw new ConfigError(`${where}.dFF must be an integer >= 0, got ${JSON.stringify(o.dFF)}`);
  if (o.positions !== undefined && o.positions !== 'learned' && o.positions !== 'rotary') throw new ConfigError(`${where}.positions must be "learned" or "rotary", got ${JSON.stringify(o.positions)}`);
  if (o.tiedEmbeddings !== undefined && typeof o.tiedEmbeddings !== 'boolean') throw new ConfigError(`${where}.tiedEmbeddings must be true or false, got ${JSON.stringify(o.tiedEmbeddings)}`);
  const m: GptShape = {
    vocabSize: o.vocabSize as number,
    nLayer: o.nLayer as number,
    nHead: o.nHead as number,
    dModel: o.dModel as number,
    dFF: (o.dFF as number) || 4 * (o.dModel as number),
    seqLen: (o.seqLen as number) ?? 128,
    positions: (o.positions as 'learned' | 'rotary') ?? 'learned',
    tiedEmbeddings: (o.tiedEmbeddings as boolean) ?? true,
  };
  if (m.dModel % m.nHead !== 0) throw new ConfigError(`${where}.nHead (${m.nHead}) must divide ${where}.dModel (${m.dModel})`);
  return m;
}

/** Parameter count of paramSpecs(c) in @patchflow/trainer (same layout, counted without building tensors). */
export function parameterCount(c: GptShape): number {
  const d = c.dModel;
  let n = c.vocabSize * d + (c.positions === 'learned' ? c.seqLen * d : 0);
  n += c.nLayer * (4 * d + d * 3 * d + 3 * d + d * d + d + d * c.dFF + c.dFF + c.dFF * d + d);
  n += 2 * d + (c.tiedEmbeddings ? 0 : d * c.vocabSize);
  return n;
}
