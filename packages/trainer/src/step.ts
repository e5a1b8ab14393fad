/**
 * One optimizer step of the eager (tfjs) path: for each of `gradAccum` micro-batches, plugins shape
 * the batch and the embeddings, the loss (a plugin's, or mean cross-entropy over K labels) and its
 * gradients come from tf.variableGrads, and gradients are summed; then averaged, edited by plugins
 * (masks), clipped and applied by AdamW.
 */
import { tf, crossEntropy } from '@patchflow/tensor';
import type { TrainConfig } from './config.js';
import type { GPT } from './model.js';
import type { AdamW } from './optim.js';
import { type Batch, type PhaseContext, type StepContext, type TrainerPlugin, tokenBatch } from './plugin.js';
import type { BatchSampler } from './data.js';
import type { ResolvedPhase } from './phases.js';

export interface StepInputs {
  config: TrainConfig;
  model: GPT;
  optimizer: AdamW;
  sampler: BatchSampler;
  phase: ResolvedPhase;
  /** The phase's active plugins, in order. */
  active: TrainerPlugin[];
  phaseCtx(p: TrainerPlugin): PhaseContext;
  stepCtx(p: TrainerPlugin): StepContext;
  lr: number;
}

/**
 * Runs the step. A non-finite loss stops before any update (`applied: false`, gradients dropped),
 * so the caller can report divergence with the weights of the last good step.
 */
export async function eagerStep(x: StepInputs): Promise<{ loss: number; gradNorm: number; applied: boolean }> {
  const { config, model, optimizer, sampler, phase: ph, active } = x;
  const vars = model.specs.map((s) => model.p(s.name));
  const batchOwner = active.find((p) => p.makeBatch);
  const lossOwner = active.find((p) => p.loss);
  let lossSum = 0;
  let grads: Record<string, tf.Tensor> = {};
  for (let micro = 0; micro < config.gradAccum; micro++) {
    const windows = sampler.windows(config.batchSize, ph.layout.windowTokens);
    const batch: Batch = batchOwner
      ? batchOwner.makeBatch!(windows, config.batchSize, ph.layout, x.phaseCtx(batchOwner))
      : tokenBatch(windows, config.batchSize, ph.layout);
    const { value, grads: rawGrads } = tf.variableGrads(() => {
      const ids = tf.tensor2d(batch.inputs, [batch.rows, ph.layout.inputTokens], 'int32');
      let emb = model.embed(ids);
      for (const p of active) if (p.transformEmbeddings) emb = p.transformEmbeddings(emb, x.stepCtx(p));
      const logits = model.forwardEmbeddings(emb);
      const labels = tf.tensor2d(batch.labels, [batch.rows * ph.layout.positions, ph.layout.labelsPerPosition], 'int32');
      return lossOwner ? lossOwner.loss!(logits, labels, x.stepCtx(lossOwner)) : (tf.mean(crossEntropy(logits, labels)) as tf.Scalar);
    }, vars);
    const g = model.gradsByParam(rawGrads);
    lossSum += (await value.data())[0]!;
    value.dispose();
    if (micro === 0) grads = g;
    else {
      for (const k of Object.keys(g)) {
        const s = tf.add(grads[k]!, g[k]!);
        grads[k]!.dispose();
        g[k]!.dispose();
        grads[k] = s;
      }
    }
  }
  if (config.gradAccum > 1) {
    for (const k of Object.keys(grads)) {
      const s = tf.div(grads[k]!, config.gradAccum);
      grads[k]!.dispose();
      grads[k] = s;
    }
  }
  const loss = lossSum / config.gradAccum;
  if (!Number.isFinite(loss)) {
    for (const g of Object.values(grads)) g.dispose();
    return { loss, gradNorm: NaN, applied: false };
  }
  for (const p of active) {
    if (!p.transformGradients) continue;
    const next = p.transformGradients(grads, x.stepCtx(p));
    for (const [k, g] of Object.entries(grads)) if (next[k] !== g) g.dispose();
    grads = next;
  }
  const normT = optimizer.step(grads, x.lr);
  for (const g of Object.values(grads)) g.dispose();
  const gradNorm = (await normT.data())[0]!;
  normT.dispose();
  return { loss, gradNorm, applied: true };
}
