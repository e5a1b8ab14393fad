/**
 * Run configuration: defaults, validation and merging. Every user-facing mistake becomes a
 * ConfigError with one line that names the key.
 */
import { PatchflowError } from '@patchflow/tensor';

export class ConfigError extends PatchflowError {
  override name = 'ConfigError';
}

export interface ModelConfig {
  /** Filled from the tokenizer when omitted. */
  vocabSize: number;
  nLayer: number;
  nHead: number;
  dModel: number;
  /** MLP hidden width; default 4 × dModel. */
  dFF: number;
  /** Positions the model attends over (tokens, or patches in a patch phase). */
  seqLen: number;
  positions: 'learned' | 'rotary';
  tiedEmbeddings: boolean;
}

export interface OptimConfig {
  lr: number;
  /** Final learning rate as a fraction of lr at the end of the cosine. */
  minLrRatio: number;
  warmupSteps: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Global-norm gradient clipping; 0 disables. */
  gradClip: number;
}

export interface TrainConfig {
  model: ModelConfig;
  optim: OptimConfig;
  batchSize: number;
  gradAccum: number;
  /** Optimizer steps of a token-level run; the plan turns it into a token budget. */
  steps: number;
  seed: number;
  evalEvery: number;
  evalBatches: number;
  checkpointEvery: number;
  valFraction: number;
  logEvery: number;
  /** Corpus path; empty = the embedded corpus. */
  data: string;
  /** Path to a Hugging Face tokenizer.json; empty = bytes. */
  tokenizer: string;
  backend: string;
  /** Use the backend's compiled step where it has one (default true); false forces the eager tfjs step. */
  compile: boolean;
  /**
   * Numeric precision: 'fp32' (default) or 'f16' mixed precision (f16 matmul inputs, f32 master
   * weights, dynamic loss scaling). f16 runs only on a compiled step that supports it (webgpu with
   * shader-f16); anywhere else the run stops before step 1.
   */
  precision: 'fp32' | 'f16';
  /** Plugin settings, keyed by plugin name (validated by each plugin). */
  plugins: Record<string, Record<string, unknown>>;
}

export const DEFAULT_CONFIG: TrainConfig = {
  model: { vocabSize: 0, nLayer: 4, nHead: 4, dModel: 256, dFF: 0, seqLen: 128, positions: 'learned', tiedEmbeddings: true },
  optim: { lr: 2e-3, minLrRatio: 0.1, warmupSteps: 50, weightDecay: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, gradClip: 1.0 },
  batchSize: 16,
  gradAccum: 1,
  steps: 900,
  seed: 1337,
  evalEvery: 100,
  evalBatches: 16,
  checkpointEvery: 200,
  valFraction: 0.1,
  logEvery: 1,
  data: '',
  tokenizer: '',
  backend: 'cpu',
  compile: true,
  precision: 'fp32',
  plugins: {},
};

type Rule = { kind: 'int' | 'number' | 'string' | 'boolean' | 'enum' | 'object'; min?: number; max?: number; exclusiveMin?: boolean; values?: string[] };

const MODEL_RULES: Record<keyof ModelConfig, Rule> = {
  vocabSize: { kind: 'int', min: 0 },
  nLayer: { kind: 'int', min: 1 },
  nHead: { kind: 'int', min: 1 },
  dModel: { kind: 'int', min: 1 },
  dFF: { kind: 'int', min: 0 },
  seqLen: { kind: 'int', min: 1 },
  positions: { kind: 'enum', values: ['learned', 'rotary'] },
  tiedEmbeddings: { kind: 'boolean' },
};
const OPTIM_RULES: Record<keyof OptimConfig, Rule> = {
  lr: { kind: 'number', min: 0, exclusiveMin: true },
  minLrRatio: { kind: 'number', min: 0, max: 1 },
  warmupSteps: { kind: 'int', min: 0 },
  weightDecay: { kind: 'number', min: 0 },
  beta1: { kind: 'number', min: 0, max: 0.999999 },
  beta2: { kind: 'number', min: 0, max: 0.999999999 },
  eps: { kind: 'number', min: 0, exclusiveMin: true },
  gradClip: { kind: 'number', min: 0 },
};
const TOP_RULES: Record<Exclude<keyof TrainConfig, 'model' | 'optim'>, Rule> = {
  batchSize: { kind: 'int', min: 1 },
  gradAccum: { kind: 'int', min: 1 },
  steps: { kind: 'int', min: 1 },
  seed: { kind: 'int', min: 0 },
  evalEvery: { kind: 'int', min: 0 },
  evalBatches: { kind: 'int', min: 1 },
  checkpointEvery: { kind: 'int', min: 0 },
  valFraction: { kind: 'number', min: 0, max: 0.5, exclusiveMin: true },
  logEvery: { kind: 'int', min: 1 },
  data: { kind: 'string' },
  tokenizer: { kind: 'string' },
  backend: { kind: 'string' },
  compile: { kind: 'boolean' },
  precision: { kind: 'enum', values: ['fp32', 'f16'] },
  plugins: { kind: 'object' },
};

function check(path: string, v: unknown, r: Rule): void {
  const fail = (what: string) => {
    throw new ConfigError(`invalid config: ${path} ${what}, got ${JSON.stringify(v)}`);
  };
  switch (r.kind) {
    case 'int':
    case 'number':
      if (typeof v !== 'number' || !Number.isFinite(v)) fail('must be a finite number');
      if (r.kind === 'int' && !Number.isInteger(v)) fail('must be an integer');
      if (r.min !== undefined && ((v as number) < r.min || (r.exclusiveMin && v === r.min)))
        fail(`must be ${r.exclusiveMin ? '>' : '>='} ${r.min}`);
      if (r.max !== undefined && (v as number) > r.max) fail(`must be <= ${r.max}`);
      return;
    case 'string':
      if (typeof v !== 'string') fail('must be a string');
      return;
    case 'boolean':
      if (typeof v !== 'boolean') fail('must be true or false');
      return;
    case 'enum':
      if (typeof v !== 'string' || !r.values!.includes(v)) fail(`must be one of ${r.values!.join(', ')}`);
      return;
    case 'object':
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('must be an object');
      return;
  }
}

function mergeSection<T extends object>(path: string, base: T, patch: unknown, rules: Record<string, Rule>): T {
  if (patch === undefined) return { ...base };
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) {
    throw new ConfigError(`invalid config: ${path || 'the config'} must be an object`);
  }
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(patch)) {
    const full = path ? `${path}.${k}` : k;
    const rule = rules[k];
    if (!rule) throw new ConfigError(`invalid config: unknown key "${full}" (known: ${Object.keys(rules).join(', ')})`);
    check(full, v, rule);
    out[k] = v;
  }
  return out as T;
}

/** A partial config: every key optional, and only TrainConfig's keys (a typo is a compile-time error). */
export type ConfigPatch = { [K in keyof TrainConfig]?: TrainConfig[K] extends object ? Partial<TrainConfig[K]> | undefined : TrainConfig[K] };

/** Merges patches over the defaults, validating each key. Later patches win. */
export function resolveConfig(...patches: (ConfigPatch | undefined)[]): TrainConfig {
  return resolveConfigFrom(...patches);
}

/**
 * resolveConfig for input whose type is not known at compile time (a JSON config file, a checkpoint's
 * state): the same checks, at run time only.
 */
export function resolveConfigFrom(...patches: unknown[]): TrainConfig {
  let cfg: TrainConfig = structuredClone(DEFAULT_CONFIG);
  for (const p of patches) {
    if (p === undefined) continue;
    const { model, optim, ...top } = p as Record<string, unknown>;
    const merged = mergeSection('', cfg as unknown as Record<string, unknown>, top, { ...TOP_RULES, model: { kind: 'object' }, optim: { kind: 'object' } } as Record<string, Rule>) as unknown as TrainConfig;
    merged.model = mergeSection('model', cfg.model, model, MODEL_RULES);
    merged.optim = mergeSection('optim', cfg.optim, optim, OPTIM_RULES);
    if (top.plugins) merged.plugins = { ...cfg.plugins, ...(top.plugins as TrainConfig['plugins']) };
    cfg = merged;
  }
  return cfg;
}

/** Cross-field checks once the tokenizer's vocabulary is known. */
export function finalizeModelConfig(m: ModelConfig, vocabSize: number): ModelConfig {
  const out = { ...m, vocabSize: m.vocabSize || vocabSize, dFF: m.dFF || 4 * m.dModel };
  if (out.vocabSize < vocabSize) {
    throw new ConfigError(`invalid config: model.vocabSize ${out.vocabSize} is smaller than the tokenizer's vocabulary (${vocabSize})`);
  }
  if (out.dModel % out.nHead !== 0) {
    throw new ConfigError(`invalid config: model.nHead (${out.nHead}) must divide model.dModel (${out.dModel})`);
  }
  if (out.positions === 'rotary' && (out.dModel / out.nHead) % 2 !== 0) {
    throw new ConfigError(`invalid config: rotary positions need an even head width, got dModel/nHead = ${out.dModel / out.nHead}`);
  }
  return out;
}
