/**
 * What a training checkpoint's state.json holds, with the one reader the trainer (to resume) and
 * tools (eval, generate, export) use. checkpoint.ts stores and loads the files; this module says
 * what the trainer's JSON means.
 */
import { type TrainConfig, resolveConfigFrom } from './config.js';
import { CheckpointError, loadCheckpoint, type FloatTensor, type LoadedCheckpoint } from './checkpoint.js';
import type { SamplerState } from './data.js';
import type { TokenizerSpec } from './tokenizer.js';

export const CHECKPOINT_FORMAT = 'patchflow-checkpoint/1';

/** Where a run stands: the global step, its phase and step within it, and the counters. */
export interface RunState {
  step: number;
  phaseIndex: number;
  phaseStep: number;
  flops: number;
  tokens: number;
  elapsed: number;
  /** Step of the last checkpoint written. */
  lastGood?: number;
}

export interface EvalRecord {
  step: number;
  valLoss: number;
  flops: number;
  tokens: number;
  elapsed: number;
}

export interface CheckpointState {
  format: typeof CHECKPOINT_FORMAT;
  /** The resolved config of the run (model with vocabSize and dFF filled in). */
  config: TrainConfig;
  step: number;
  run: RunState;
  sampler: SamplerState;
  /** AdamW's step counter (its moments are in optimizer.safetensors). */
  optimizerT: number;
  /** Each plugin's JSON state (its tensors are in optimizer.safetensors as `plugin.<name>.<key>`). */
  plugins: Record<string, { json?: unknown }>;
  evals: EvalRecord[];
  tokenizer: TokenizerSpec;
  corpus: { name: string; tokens: number };
  parameters: number;
  /** Set by saveCheckpoint: the id every file of the save carries. */
  checkpointId?: string;
}

const PLUGIN_TENSOR_PREFIX = 'plugin.';

/** Name under which plugin `plugin`'s tensor `key` is stored in optimizer.safetensors. */
export function pluginTensorName(plugin: string, key: string): string {
  return `${PLUGIN_TENSOR_PREFIX}${plugin}.${key}`;
}

/** Plugin `plugin`'s tensors out of a checkpoint's optimizer tensors, by their own keys. */
export function pluginTensors(optimizer: Record<string, FloatTensor>, plugin: string): Record<string, FloatTensor> {
  const prefix = pluginTensorName(plugin, '');
  return Object.fromEntries(Object.entries(optimizer).filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]));
}

/**
 * Checks and types a state.json read from `where`: the config must be a valid training config (it is
 * re-resolved, so defaults added since the save are filled in), and the counters present. Only
 * `backend` and `compile` may be overridden: a run may continue on another backend or execution path.
 */
export function readCheckpointState(raw: unknown, where: string, overrides: { backend?: string; compile?: boolean; precision?: 'fp32' | 'f16' } = {}): CheckpointState {
  const bad = (what: string) => new CheckpointError(`${where}: state.json ${what}; is it a patchflow training checkpoint?`);
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw bad('is not a JSON object');
  const s = raw as Partial<CheckpointState> & Record<string, unknown>;
  const model = (s.config as { model?: { nLayer?: unknown } } | undefined)?.model;
  if (typeof model?.nLayer !== 'number') throw bad('holds no training config');
  let config: TrainConfig;
  try {
    config = resolveConfigFrom(s.config, {
      ...(overrides.backend ? { backend: overrides.backend } : {}),
      ...(overrides.compile !== undefined ? { compile: overrides.compile } : {}),
      ...(overrides.precision ? { precision: overrides.precision } : {}),
    });
  } catch (e) {
    throw new CheckpointError(`${where}: state.json holds no valid training config (${(e as Error).message})`);
  }
  if (!Number.isInteger(s.step) || (s.step as number) < 0) throw bad('has no step');
  if (!s.tokenizer || typeof (s.tokenizer as { kind?: unknown }).kind !== 'string') throw bad('has no tokenizer');
  const run = s.run ?? { step: s.step!, phaseIndex: 0, phaseStep: s.step!, flops: 0, tokens: 0, elapsed: 0 };
  return {
    format: CHECKPOINT_FORMAT,
    config,
    step: s.step!,
    run,
    sampler: s.sampler as SamplerState,
    optimizerT: typeof s.optimizerT === 'number' ? s.optimizerT : 0,
    plugins: s.plugins ?? {},
    evals: s.evals ?? [],
    tokenizer: s.tokenizer as TokenizerSpec,
    corpus: s.corpus ?? { name: '', tokens: 0 },
    parameters: typeof s.parameters === 'number' ? s.parameters : 0,
    checkpointId: typeof s.checkpointId === 'string' ? s.checkpointId : undefined,
  };
}

/** A training checkpoint: the files (checkpoint.ts) and the typed state. */
export interface TrainingCheckpoint extends Omit<LoadedCheckpoint, 'state'> {
  state: CheckpointState;
}

/** Loads a run directory's (or a checkpoint directory's) last complete checkpoint with its typed state. */
export function loadTrainingCheckpoint(dir: string, overrides: { backend?: string; compile?: boolean; precision?: 'fp32' | 'f16' } = {}): TrainingCheckpoint {
  const ck = loadCheckpoint(dir);
  return { ...ck, state: readCheckpointState(ck.state, ck.dir, overrides) };
}
