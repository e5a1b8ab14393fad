/**
 * Patch-level training (Shao, Meng, Zhou, "Beyond Next Token Prediction: Patch-Level Training for
 * Large Language Models", ICLR 2025, arXiv 2407.12665) as a `TrainerPlugin`.
 *
 * In the patch phase each training row holds K×T tokens; the K token embeddings of each group are
 * averaged into one patch embedding, so the transformer sees T patches at positions 0…T−1. The output
 * at patch i predicts all K tokens of patch i+1 from one log-softmax (the loss is the mean of the K
 * cross-entropies, which is what `crossEntropy` with K labels per row computes). The plan trains this
 * way on the first fraction λ of the token budget, then token-level on the rest, from the same
 * parameters. The model itself never changes: the result is an ordinary token-level GPT.
 */
import { tf, crossEntropy } from '@patchflow/tensor';
import { PluginError, registerPlugin, type Batch, type PhaseSpec, type ResolvedPhase, type RowLayout, type TrainConfig, type TrainerPlugin } from '@patchflow/trainer';

export const PLUGIN_NAME = 'patch';

export interface PatchOptions {
  /** K: tokens per patch (integer ≥ 1). Default 4. */
  patchSize?: number;
  /** λ: share of the training tokens used at patch level, in [0, 1). 0 = no patch phase. Default 2/3. */
  fraction?: number;
  /** Token phase start: 'reset' (fresh AdamW moments and LR schedule; default) or 'continue'. */
  optimizer?: 'reset' | 'continue';
}

export interface PatchSettings {
  patchSize: number;
  fraction: number;
  optimizer: 'reset' | 'continue';
}

export const DEFAULT_PATCH_SIZE = 4;
export const DEFAULT_PATCH_FRACTION = 2 / 3;

const KNOWN_KEYS = ['patchSize', 'fraction', 'optimizer'];

/** Checks and completes the options; every mistake is a PluginError naming the config key. */
export function resolvePatchOptions(opts: PatchOptions = {}): PatchSettings {
  const o = opts as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!KNOWN_KEYS.includes(k)) throw new PluginError(`invalid config: unknown key "plugins.patch.${k}" (known: ${KNOWN_KEYS.join(', ')})`);
  }
  const k = o.patchSize ?? DEFAULT_PATCH_SIZE;
  const fraction = o.fraction ?? DEFAULT_PATCH_FRACTION;
  const optimizer = o.optimizer ?? 'reset';
  if (typeof k !== 'number' || !Number.isInteger(k) || k < 1) {
    throw new PluginError(`invalid config: plugins.patch.patchSize must be an integer >= 1, got ${JSON.stringify(k)}`);
  }
  if (typeof fraction !== 'number' || !Number.isFinite(fraction) || fraction < 0 || fraction >= 1) {
    throw new PluginError(`invalid config: plugins.patch.fraction must be in [0, 1), got ${JSON.stringify(fraction)}`);
  }
  if (optimizer !== 'reset' && optimizer !== 'continue') {
    throw new PluginError(`invalid config: plugins.patch.optimizer must be "reset" or "continue", got ${JSON.stringify(optimizer)}`);
  }
  return { patchSize: k, fraction, optimizer };
}

/** Row layout of a patch phase: K·T input tokens, K·(T+1) drawn, T positions, K labels each. */
export function patchLayout(seqLen: number, patchSize: number): RowLayout {
  return { inputTokens: patchSize * seqLen, windowTokens: patchSize * (seqLen + 1), positions: seqLen, labelsPerPosition: patchSize };
}

/**
 * Inputs are the first K·T tokens of each window; patch i's labels are tokens K(i+1)…K(i+2)−1 of the
 * window (all K tokens of the next patch), so labels [rows·T, K] are the window shifted by K.
 */
export function patchBatch(windows: Int32Array, rows: number, layout: RowLayout): Batch {
  const k = layout.labelsPerPosition;
  const n = layout.inputTokens;
  const w = layout.windowTokens;
  if (n !== k * layout.positions || w !== n + k) throw new Error(`patchBatch: not a patch layout: ${JSON.stringify(layout)}`);
  if (windows.length !== rows * w) throw new Error(`patchBatch: expected ${rows}×${w} window tokens, got ${windows.length}`);
  const inputs = new Int32Array(rows * n);
  const labels = new Int32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    inputs.set(windows.subarray(r * w, r * w + n), r * n);
    labels.set(windows.subarray(r * w + k, r * w + k + n), r * n);
  }
  return { rows, inputs, labels, layout };
}

/** [B, K·T, d] token embeddings -> [B, T, d] patch embeddings (mean of each group of K). Rank ≤ 4. */
export function averagePatches(emb: tf.Tensor3D, patchSize: number): tf.Tensor3D {
  if (patchSize === 1) return emb;
  const [b, n, d] = emb.shape;
  if (n % patchSize !== 0) throw new Error(`averagePatches: ${n} embeddings are not a multiple of the patch size ${patchSize}`);
  return tf.mean(tf.reshape(emb, [b, n / patchSize, patchSize, d]), 2) as tf.Tensor3D;
}

/** The patch loss: mean over patches of the mean over K of −log softmax(logits)[label] (one log-softmax per row). */
export function patchLoss(logits: tf.Tensor2D, labels: tf.Tensor2D): tf.Scalar {
  return tf.mean(crossEntropy(logits, labels)) as tf.Scalar;
}

/**
 * Splits the first phase of a plan into a patch phase (share λ, patch settings) and a token phase
 * (share 1−λ, the given optimizer mode). Other plugins' settings carry over to both halves.
 */
export function splitPlan(phases: PhaseSpec[], s: PatchSettings): PhaseSpec[] {
  if (s.fraction === 0) return phases;
  const [first, ...rest] = phases;
  if (!first) return phases;
  const patch: PhaseSpec = {
    ...first,
    name: 'patch',
    fraction: first.fraction * s.fraction,
    plugins: { ...first.plugins, [PLUGIN_NAME]: { ...s } },
  };
  const token: PhaseSpec = {
    ...first,
    name: 'token',
    fraction: first.fraction * (1 - s.fraction),
    plugins: { ...first.plugins },
    optimizer: s.optimizer,
  };
  return [patch, token, ...rest];
}

/** The patch-level training plugin (its phase settings are the resolved PatchSettings). */
export function patchTraining(opts: PatchOptions = {}): TrainerPlugin<PatchSettings> {
  const s = resolvePatchOptions(opts);
  const k = s.patchSize;
  return {
    name: PLUGIN_NAME,
    plan(phases: PhaseSpec[], config: TrainConfig) {
      if (s.fraction === 0) return phases;
      const budget = config.steps * config.batchSize * config.gradAccum * config.model.seqLen;
      const share = (phases[0]?.fraction ?? 1) * s.fraction;
      const patchTokens = share * budget;
      const sequence = k * config.model.seqLen;
      if (patchTokens < sequence) {
        throw new PluginError(
          `invalid config: the patch phase gets ${Math.floor(patchTokens)} tokens (fraction ${s.fraction} of a ${budget}-token budget), ` +
            `fewer than one patch sequence of K×seqLen = ${sequence}: raise steps or plugins.patch.fraction, or lower plugins.patch.patchSize`,
        );
      }
      return splitPlan(phases, s);
    },
    rowLayout: (seqLen) => patchLayout(seqLen, k),
    makeBatch: (windows, rows, layout) => patchBatch(windows, rows, layout),
    transformEmbeddings: (emb) => averagePatches(emb, k),
    metrics: () => ({ patchSize: k }),
    // a compiled step averages the K embeddings and takes the K-label loss itself
    compiled: () => ({ patchSize: k }),
  };
}

export interface PhaseCost {
  name: string;
  steps: number;
  /** Training tokens read in the phase. */
  tokens: number;
  /** Training FLOPs of the phase. */
  flops: number;
  /** FLOPs the same tokens would cost in dense token-level training. */
  tokenLevelFlops: number;
}

export interface PlanCost {
  phases: PhaseCost[];
  total: { tokens: number; flops: number };
  /** Token-level training on the same tokens. */
  tokenLevel: { tokens: number; flops: number };
  /** total.flops / tokenLevel.flops (≈ λ/K + 1 − λ for a patch plan). */
  relative: number;
}

/**
 * FLOPs and tokens per phase of a resolved plan, and its cost relative to dense token-level training
 * on the same tokens (`tokenLevelFlopsPerToken` per token; without it, each input
 * token of a row is taken to cost one position at the phase's own per-position cost).
 */
export function planCost(phases: readonly (Pick<ResolvedPhase, 'name' | 'steps' | 'layout' | 'flopsPerStep' | 'tokensPerStep'> & { tokenLevelFlopsPerToken?: number })[]): PlanCost {
  const out: PhaseCost[] = phases.map((p) => {
    const rows = p.tokensPerStep / p.layout.inputTokens;
    const flopsPerPosition = p.tokenLevelFlopsPerToken ?? p.flopsPerStep / (rows * p.layout.positions);
    const tokens = p.steps * p.tokensPerStep;
    return { name: p.name, steps: p.steps, tokens, flops: p.steps * p.flopsPerStep, tokenLevelFlops: tokens * flopsPerPosition };
  });
  const total = { tokens: out.reduce((a, p) => a + p.tokens, 0), flops: out.reduce((a, p) => a + p.flops, 0) };
  const tokenLevel = { tokens: total.tokens, flops: out.reduce((a, p) => a + p.tokenLevelFlops, 0) };
  return { phases: out, total, tokenLevel, relative: total.flops / tokenLevel.flops };
}

/** The ideal relative cost of a patch plan: λ/K + 1 − λ. */
export function expectedRelativeCost(patchSize: number, fraction: number): number {
  return fraction / patchSize + 1 - fraction;
}

/** One line for logs: `plan: patch (K=4) 67% of tokens, 100 steps; token 33%, 200 steps; cost 0.50× token-level`. */
export function describePlan(phases: readonly (Pick<ResolvedPhase, 'name' | 'steps' | 'layout' | 'flopsPerStep' | 'tokensPerStep' | 'optimizer' | 'index'>)[]): string {
  const c = planCost(phases);
  const parts = c.phases.map((p, i) => {
    const ph = phases[i]!;
    const k = ph.layout.labelsPerPosition;
    const share = ((100 * p.tokens) / Math.max(1, c.total.tokens)).toFixed(0);
    const opt = ph.index > 0 ? `, optimizer ${ph.optimizer}` : '';
    return `${p.name}${k > 1 ? ` (K=${k})` : ''} ${share}% of tokens, ${p.steps} steps, ${(p.flops / 1e12).toFixed(3)} TFLOP${opt}`;
  });
  return `plan: ${parts.join('; ')}; cost ${c.relative.toFixed(3)}× dense token-level training on the same ${c.total.tokens.toLocaleString('en-US')} tokens`;
}

// `plugins: { patch: {...} }` in a config builds this plugin. It owns the row layout and averages the
// embeddings, so it goes first: other embedding plugins see what the transformer reads.
registerPlugin({
  name: PLUGIN_NAME,
  create: (settings) => patchTraining(settings as PatchOptions),
  order: 'first',
  description: 'patch-level training (Shao et al., ICLR 2025): K tokens per patch on a share λ of the data, then token-level',
});
