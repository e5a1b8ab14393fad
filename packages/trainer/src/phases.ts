/**
 * Resolving a plan into phases with step counts, row layouts, LR-schedule segments and FLOP counts.
 * The token budget is `steps × batchSize × gradAccum × seqLen` tokens of token-level training; each
 * phase gets its fraction of those tokens, whatever its row layout reads per step.
 */
import type { TrainConfig } from './config.js';
import type { GPT } from './model.js';
import type { AdamW } from './optim.js';
import { type FlopsContext, type PhaseContext, type PhaseSpec, type RowLayout, type TrainerPlugin, tokenLayout } from './plugin.js';

export interface ResolvedPhase extends PhaseSpec {
  index: number;
  steps: number;
  layout: RowLayout;
  /** Global step at which this phase's LR schedule segment starts, and the segment's length. */
  scheduleStart: number;
  scheduleSteps: number;
  flopsPerStep: number;
  tokensPerStep: number;
  /** FLOPs per token of dense token-level training of the same model (the baseline plans are compared with). */
  tokenLevelFlopsPerToken: number;
}

export function resolvePhases(phases: PhaseSpec[], config: TrainConfig, plugins: TrainerPlugin[], model: GPT, optimizer: AdamW): ResolvedPhase[] {
  const m = config.model;
  const budget = config.steps * config.batchSize * config.gradAccum * m.seqLen;
  const out: ResolvedPhase[] = [];
  phases.forEach((ph, index) => {
    const active = plugins.filter((p) => ph.plugins[p.name]);
    const ctxFor = (p: TrainerPlugin): PhaseContext => ({ config, model, optimizer, phase: ph, phaseIndex: index, settings: ph.plugins[p.name]! });
    const owner = active.find((p) => p.rowLayout);
    const layout = owner ? owner.rowLayout!(m.seqLen, ctxFor(owner)) : tokenLayout(m.seqLen);
    if (layout.positions > m.seqLen) throw new Error(`phase "${ph.name}": ${layout.positions} positions exceed model.seqLen ${m.seqLen}`);
    const rowsPerStep = config.batchSize * config.gradAccum;
    const tokensPerStep = rowsPerStep * layout.inputTokens;
    const steps = Math.max(1, Math.round((ph.fraction * budget) / tokensPerStep));
    const flops = stepFlops(active, { config, model, optimizer, phase: ph, phaseIndex: index, layout, rowsPerStep }, model);
    const start = out.reduce((a, p) => a + p.steps, 0);
    const cont = index > 0 && ph.optimizer === 'continue';
    const scheduleStart = cont ? out[index - 1]!.scheduleStart : start;
    out.push({ ...ph, index, steps, layout, scheduleStart, scheduleSteps: 0, flopsPerStep: flops, tokensPerStep, tokenLevelFlopsPerToken: model.trainFlopsPerPosition(m.seqLen) });
  });
  for (const ph of out) ph.scheduleSteps = out.filter((p) => p.scheduleStart === ph.scheduleStart).reduce((a, p) => a + p.steps, 0);
  return out;
}

/** Training FLOPs of one optimizer step: the model's dense count, then each active plugin's flops hook. */
export function stepFlops(active: TrainerPlugin[], ctx: Omit<FlopsContext, 'settings'>, model: GPT): number {
  let flops = ctx.rowsPerStep * ctx.layout.positions * model.trainFlopsPerPosition(ctx.layout.positions);
  for (const p of active) if (p.flops) flops = p.flops(flops, { ...ctx, settings: ctx.phase.plugins[p.name]! });
  return flops;
}
