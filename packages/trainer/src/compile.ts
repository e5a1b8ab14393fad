/**
 * Compiled steps: a backend may run a phase's optimizer steps as a program compiled once for its
 * fixed shapes (the WebGPU backend lowers the dataflow runtime's graph of the step to its own
 * kernels and replays them), instead of the eager tfjs step (step.ts).
 *
 * A phase is compiled when its backend has a step compiler, `config.compile` is not false, and every
 * active plugin says what it contributes to the compiled step (its `compiled` hook): the patch size,
 * a label-smoothing ε, masks of pruned weights. A plugin without that hook, or one that answers with
 * a reason, keeps the phase on the eager step, and the run says so in one line. Both paths train the
 * same model with the same optimizer: checkpoints, resume, evaluation and generation are alike.
 */
import { processSingleton } from '@patchflow/tensor';
import pkg from '../package.json' with { type: 'json' };
import type { TrainConfig } from './config.js';
import type { GPT } from './model.js';
import type { AdamW } from './optim.js';
import type { Batch, PhaseContext, TrainerPlugin } from './plugin.js';
import type { ResolvedPhase } from './phases.js';

/** A pruned weight in a compiled step: its 0/1 mask and, on the block-sparse kernels, its block mask. */
export interface CompiledMask {
  /** 0/1 per element [K, N] (row-major). */
  mask: Uint8Array;
  /** b×b block masks on the backend's block-sparse kernels: b and the [K/b, N/b] mask (non-zero = kept). */
  block?: { size: number; mask: Int32Array };
}

/** What a plugin adds to a phase's compiled step. */
export interface CompiledContribution {
  /** Tokens averaged per position (patch-level training). */
  patchSize?: number;
  /** Label smoothing ε of the loss. */
  labelSmoothing?: number;
  /** Pruned weights by parameter name, and the pattern and sparsity the graph is costed with. */
  sparsity?: { masks: Map<string, CompiledMask>; sparsity: number; pattern: string };
}

export interface CompileRequest {
  config: TrainConfig;
  model: GPT;
  optimizer: AdamW;
  phase: ResolvedPhase;
  /** The contributions of the phase's plugins, merged. */
  contribution: CompiledContribution;
}

export interface CompiledStep {
  /** One line for the run's log: kernels per step, memory. */
  readonly description: string;
  /** How many submitted steps may be unread at once (the trainer keeps that many in flight). */
  readonly stepsInFlight: number;
  /** Uploads the model's weights and the optimizer's moments (at the start of a phase, or after they changed). */
  load(): Promise<void>;
  /**
   * Runs one optimizer step over `batches` (gradAccum micro-batches) with learning rate `lr` as AdamW
   * update `t` (1-based). Resolves once the step is submitted, with `done`: a promise of its mean
   * loss and gradient norm. A caller may submit the next step before `done` resolves.
   */
  submit(batches: Batch[], lr: number, t: number): Promise<{ done: Promise<CompiledStepResult> }>;
  /** Copies weights and moments back into the model's variables and the optimizer (before evaluating or saving). */
  store(): Promise<void>;
  dispose(): void;
}

/** One compiled step's outcome. */
export interface CompiledStepResult {
  loss: number;
  gradNorm: number;
  /** Mixed precision: the loss scale after this step. */
  lossScale?: number;
  /** Mixed precision: the scaled gradients overflowed, the update was skipped (the scale was lowered). */
  skipped?: boolean;
  /** Mixed precision: skipped steps so far. */
  skippedSteps?: number;
}

export interface StepCompiler {
  /** A compiled step for the request's phase, or the reason there is none (e.g. an unsupported shape). */
  compile(req: CompileRequest): Promise<CompiledStep | { reason: string }>;
}

const compilers = processSingleton('@patchflow/trainer', pkg.version, import.meta.url, 'step-compilers', () => new Map<string, StepCompiler>());

/** Registers the step compiler of a backend (the WebGPU backend registers one on import). */
export function registerStepCompiler(backend: string, compiler: StepCompiler): void {
  compilers.set(backend, compiler);
}

export function stepCompilerFor(backend: string): StepCompiler | undefined {
  return compilers.get(backend);
}

/**
 * The merged contribution of a phase's active plugins to a compiled step, or the reason the phase
 * must run eagerly (the first plugin without a compiled form).
 */
export function phaseContribution(active: TrainerPlugin[], ctxOf: (p: TrainerPlugin) => PhaseContext): CompiledContribution | { reason: string } {
  const out: CompiledContribution = {};
  for (const p of active) {
    if (!p.compiled) return { reason: `plugin "${p.name}" has no compiled form` };
    const c = p.compiled(ctxOf(p));
    if ('reason' in c) return { reason: `plugin "${p.name}": ${c.reason}` };
    if (c.patchSize !== undefined) out.patchSize = c.patchSize;
    if (c.labelSmoothing !== undefined) out.labelSmoothing = c.labelSmoothing;
    if (c.sparsity) out.sparsity = c.sparsity;
  }
  return out;
}
