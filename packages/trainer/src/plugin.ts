/**
 * The plugin hook interface. A plugin can rewrite the training plan, shape the batch and the input
 * embeddings, replace the loss, edit gradients, act after each optimizer step, add to the FLOP count
 * and keep state in checkpoints. Hooks are called only in phases where the plan gives the plugin
 * settings (`phase.plugins[plugin.name]`); several plugins compose in the order they are given
 * (composition.ts orders the plugins a config names).
 */
import type { tf } from '@patchflow/tensor';
import { ConfigError, type TrainConfig } from './config.js';
import type { CompiledContribution } from './compile.js';
import type { GPT } from './model.js';
import type { AdamW } from './optim.js';

/** A bad plugin setting or an invalid plan: a ConfigError that names the plugin's key. */
export class PluginError extends ConfigError {
  override name = 'PluginError';
}

export interface PhaseSpec {
  name: string;
  /** Share of the run's training tokens; the shares of a plan sum to 1. */
  fraction: number;
  /** Settings of each plugin active in this phase (absent = inactive); each plugin reads its own as its `S`. */
  plugins: Record<string, unknown>;
  /**
   * At the phase's start: 'reset' gives fresh optimizer moments and a new warmup + cosine schedule over
   * the phase; 'continue' keeps moments and continues the previous phase's schedule. The first phase
   * always starts fresh.
   */
  optimizer: 'reset' | 'continue';
}

/** How rows of a batch are laid out in the token stream. */
export interface RowLayout {
  /** Data tokens the model reads per row (seqLen for token-level training). */
  inputTokens: number;
  /** Tokens drawn from the stream per row (inputs plus what the labels need beyond them). */
  windowTokens: number;
  /** Positions the transformer sees per row. */
  positions: number;
  /** Labels per position (K for patch-level training, 1 otherwise). */
  labelsPerPosition: number;
}

export interface Batch {
  rows: number;
  /** int32 [rows, layout.inputTokens] token ids. */
  inputs: Int32Array;
  /** int32 [rows * layout.positions, layout.labelsPerPosition] target ids. */
  labels: Int32Array;
  layout: RowLayout;
}

/** What a hook sees; `S` is the plugin's own settings type (what its plan hook put in the phase). */
export interface PhaseContext<S = unknown> {
  config: TrainConfig;
  model: GPT;
  optimizer: AdamW;
  phase: PhaseSpec;
  phaseIndex: number;
  /** This plugin's settings for the phase. */
  settings: S;
}

/** What the flops hook sees: the phase, its row layout, rows per optimizer step, and the step if known. */
export interface FlopsContext<S = unknown> extends PhaseContext<S> {
  layout: RowLayout;
  rowsPerStep: number;
  /** Global optimizer step being counted (1-based); absent for the phase-start estimate. */
  step?: number;
}

export interface StepContext<S = unknown> extends PhaseContext<S> {
  /** The run's resolved phases in order (steps per phase), for schedules that span phases. */
  plan: readonly { name: string; steps: number; plugins: PhaseSpec['plugins'] }[];
  /** The optimizer step being taken (or, in afterStep, just taken): global, 1-based. */
  step: number;
  /** The same step's 0-based index within its phase. */
  phaseStep: number;
  phaseSteps: number;
}

export interface PluginState {
  json?: unknown;
  tensors?: Record<string, { shape: number[]; data: Float32Array }>;
}

/**
 * A trainer plugin, generic over its settings `S` (what its plan hook puts in `phase.plugins[name]`
 * and every hook reads back as `ctx.settings`). Every hook is optional. A plugin without a `plan`
 * hook is active in every phase with settings `{}`.
 */
export interface TrainerPlugin<S = unknown> {
  readonly name: string;
  /** Rewrites the plan (split a phase, add its settings to phases). Validate settings here: throw PluginError. */
  plan?(phases: PhaseSpec[], config: TrainConfig): PhaseSpec[];
  /** Once, after the model and optimizer exist and before training (or after a checkpoint is loaded). */
  init?(ctx: Omit<PhaseContext<S>, 'phase' | 'phaseIndex' | 'settings'>): void | Promise<void>;
  phaseStart?(ctx: PhaseContext<S>): void | Promise<void>;
  /** Before the forward and backward passes of each optimizer step. */
  beforeStep?(ctx: StepContext<S>): void | Promise<void>;
  /** Row layout of this phase; at most one active plugin may define it. */
  rowLayout?(seqLen: number, ctx: PhaseContext<S>): RowLayout;
  /** Builds inputs and labels from sampled windows [rows, windowTokens]; pairs with rowLayout. */
  makeBatch?(windows: Int32Array, rows: number, layout: RowLayout, ctx: PhaseContext<S>): Batch;
  /** Input embeddings [B, T_in, d] -> [B, positions, d]; chained in plugin order. */
  transformEmbeddings?(emb: tf.Tensor3D, ctx: StepContext<S>): tf.Tensor3D;
  /** Replaces the loss; at most one active plugin may define it. logits [B*positions, V]. */
  loss?(logits: tf.Tensor2D, labels: tf.Tensor2D, ctx: StepContext<S>): tf.Scalar;
  /** Edits gradients before the optimizer (e.g. masks); chained in plugin order. */
  transformGradients?(grads: Record<string, tf.Tensor>, ctx: StepContext<S>): Record<string, tf.Tensor>;
  afterStep?(ctx: StepContext<S>): void | Promise<void>;
  /**
   * Adjusts the training FLOPs of one optimizer step; chained in plugin order. Called once per
   * phase for the plan (no ctx.step) and again for every step, so the count may change during a phase.
   */
  flops?(flops: number, ctx: FlopsContext<S>): number;
  /** Extra numbers for metrics.jsonl and the summary (density, ...). */
  metrics?(ctx: PhaseContext<S>): Record<string, number>;
  /** Lines for the end-of-run summary. */
  summary?(): string[];
  saveState?(): Promise<PluginState> | PluginState;
  loadState?(state: PluginState): void;
  /**
   * What this plugin adds to a compiled step in this phase (compile.ts), or why it cannot run there.
   * A compiled step replaces the per-step hooks (batch building excepted: makeBatch still runs on the
   * host), so a plugin that answers must be fully described by its contribution. Without this hook,
   * phases where the plugin is active run the eager step.
   */
  compiled?(ctx: PhaseContext<S>): CompiledContribution | { reason: string };
}

/** Token-level rows: the model reads seqLen tokens and predicts the next token at each position. */
export function tokenLayout(seqLen: number): RowLayout {
  return { inputTokens: seqLen, windowTokens: seqLen + 1, positions: seqLen, labelsPerPosition: 1 };
}

export function tokenBatch(windows: Int32Array, rows: number, layout: RowLayout): Batch {
  const t = layout.inputTokens;
  const w = layout.windowTokens;
  const inputs = new Int32Array(rows * t);
  const labels = new Int32Array(rows * t);
  for (let r = 0; r < rows; r++) {
    inputs.set(windows.subarray(r * w, r * w + t), r * t);
    labels.set(windows.subarray(r * w + 1, r * w + 1 + t), r * t);
  }
  return { rows, inputs, labels, layout };
}

/** A plan hook's usual edit: make plugin `name` active, with `settings`, in every phase. */
export function addToAllPhases(phases: PhaseSpec[], name: string, settings: unknown): PhaseSpec[] {
  return phases.map((p) => ({ ...p, plugins: { ...p.plugins, [name]: settings } }));
}

/** The plan every run starts from: one token-level phase over all the data. */
export function basePlan(): PhaseSpec[] {
  return [{ name: 'train', fraction: 1, plugins: {}, optimizer: 'reset' }];
}

/**
 * Applies each plugin's plan hook in order (a plugin without one joins every phase with settings
 * `{}`) and validates the result: unique plugin names, fractions that sum to 1, at most one owner of
 * the row layout and of the loss per phase.
 */
export function buildPlan(plugins: TrainerPlugin[], config: TrainConfig): PhaseSpec[] {
  const seen = new Set<string>();
  for (const p of plugins) {
    if (seen.has(p.name)) throw new PluginError(`two plugins are named "${p.name}": plugin names must be unique`);
    seen.add(p.name);
  }
  let phases = basePlan();
  for (const p of plugins) {
    const copy = phases.map((x) => ({ ...x, plugins: { ...x.plugins } }));
    phases = p.plan ? p.plan(copy, config) : addToAllPhases(copy, p.name, {});
  }
  const sum = phases.reduce((a, p) => a + p.fraction, 0);
  if (phases.length === 0 || Math.abs(sum - 1) > 1e-9 || phases.some((p) => !(p.fraction > 0))) {
    throw new PluginError(`invalid training plan: phase fractions must be positive and sum to 1 (got ${phases.map((p) => p.fraction).join(' + ')})`);
  }
  for (const ph of phases) {
    for (const hook of ['rowLayout', 'loss'] as const) {
      const owners = plugins.filter((p) => ph.plugins[p.name] && p[hook]);
      if (owners.length > 1) throw new PluginError(`plugins ${owners.map((p) => p.name).join(' and ')} both define ${hook} in phase "${ph.name}"`);
    }
  }
  return phases;
}
