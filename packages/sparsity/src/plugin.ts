/**
 * Sparse training from scratch as a `TrainerPlugin` (after Srinivasan et al., "Training Large
 * Language Models Efficiently with Sparsity and Dataflow", arXiv 2304.05511).
 *
 * Masks cover the projection matrices (attention qkv/out, MLP in/out by their role in the model
 * description; the embeddings only when asked; never LayerNorm or biases). Modes:
 * - static: the mask is chosen at initialisation (by magnitude of the initial weights, or at random)
 *   and kept for the whole run;
 * - gmp: gradual magnitude pruning from dense along Zhu & Gupta's cubic schedule;
 * - rigl: dynamic sparse training (Evci et al.): every `interval` steps drop the smallest-|w| share of
 *   each layer's kept units and regrow as many by largest |∇| (computed densely on that step), the
 *   share decaying along a cosine to 0 at `end` of the sparse steps;
 * and any of them followed by a dense phase (`denseFraction`, sparse-to-dense) in the training plan.
 * Pruned weights stay exactly zero: gradients are masked before the optimizer (so AdamW's moments of
 * pruned entries stay zero), masks are re-applied after every step, and a regrown weight starts at
 * zero with zero moments. With block masks the model's products with the masked matrices go through
 * the backend's block-sparse kernel (`blockSparseMatMul`) when it has one (maskset.ts).
 */
import { tf } from '@patchflow/tensor';
import {
  PluginError,
  addToAllPhases,
  paramSpecs,
  productFlopsPerPosition,
  type FlopsContext,
  type PhaseContext,
  type PhaseSpec,
  type PluginState,
  type StepContext,
  type TrainConfig,
  type TrainerPlugin,
  type CompiledMask,
  Rng,
  fillNormal,
} from '@patchflow/trainer';
import { type Pattern, blockMaskOf, countKept, layerDensities, maskFromScores, parsePattern, patternMismatch } from './masks.js';
import { MaskSet, type Routing } from './maskset.js';
import { KERNEL_MAX_DENSITY, PLUGIN_NAME, maskedMatrices, resolveSparsityOptions, type SparsityOptions, type SparsitySettings } from './options.js';
import { gmpSparsity, riglFraction } from './schedules.js';
import { dropAndGrow, prune } from './updates.js';

/** The plugin's settings in a phase: the resolved options, and `dense` in a final dense phase. */
export type SparsityPhaseSettings = SparsitySettings & { dense?: boolean };

/** What `sparseTraining()` returns: the plugin, plus read access to its masks. */
export interface SparsityPlugin extends TrainerPlugin<SparsityPhaseSettings> {
  readonly settings: SparsitySettings;
  /** Current masks by parameter name (copies), or an empty map in a dense phase. */
  masks(): Map<string, { shape: [number, number]; mask: Uint8Array }>;
  /** Density of each masked matrix and over all of them (1 in a dense phase). */
  densities(): { overall: number; layers: Record<string, number> };
  /** Mask updates done so far (gmp prunes, rigl drop/regrow rounds). */
  readonly updates: number;
}

/** Sparse steps of the plan (phases with this plugin, not dense), and `ctx.step`'s place among them. */
function sparseSpan(ctx: StepContext): { u: number; total: number } {
  let before = 0;
  let total = 0;
  let seen = false;
  for (const ph of ctx.plan) {
    const st = ph.plugins[PLUGIN_NAME] as { dense?: boolean } | undefined;
    if (st && !st.dense) {
      seen = true;
      total += ph.steps;
    } else if (!seen) before += ph.steps;
  }
  return { u: ctx.step - before, total };
}

/** The sparse training plugin. */
export function sparseTraining(opts: SparsityOptions = {}): SparsityPlugin {
  const s = resolveSparsityOptions(opts);
  const pattern: Pattern = parsePattern(s.pattern);
  const routing: Routing = { active: true, denseGradStep: false };
  let masks: MaskSet | undefined;
  let targets: Record<string, number> = {};
  let updates = 0;
  let gradScores = new Map<string, tf.Tensor>();
  let totalParams = 0;

  const entries = () => masks?.entries ?? new Map();

  /** Densities in effect: the masks', or 1 everywhere in a dense phase. */
  const densities = () => {
    const d = masks?.densities() ?? { overall: 1, layers: {} };
    if (routing.active) return d;
    return { overall: 1, layers: Object.fromEntries(Object.keys(d.layers).map((n) => [n, 1])) };
  };

  const isRiglStep = (ctx: StepContext) => {
    if (s.mode !== 'rigl' || !routing.active) return false;
    const { u, total } = sparseSpan(ctx);
    return u > 0 && u % s.interval === 0 && riglFraction(s.regrowFraction, u, total, s.end) > 0;
  };

  const plugin: SparsityPlugin = {
    name: PLUGIN_NAME,
    settings: s,
    get updates() {
      return updates;
    },

    plan(phases: PhaseSpec[], config: TrainConfig) {
      const mats = maskedMatrices(config.model, s.layers);
      if (!Object.keys(mats).length) throw new PluginError('invalid config: plugins.sparsity.layers selects no weight matrix of this model');
      for (const [name, shape] of Object.entries(mats)) {
        const why = patternMismatch(pattern, name, shape);
        if (why) throw new PluginError(`invalid config: plugins.sparsity.pattern ${s.pattern}: ${why}`);
      }
      const settings: SparsityPhaseSettings = { ...s };
      let out = addToAllPhases(phases, PLUGIN_NAME, settings);
      if (s.denseFraction > 0) {
        const last = out[out.length - 1]!;
        if (last.fraction <= s.denseFraction) {
          throw new PluginError(`invalid config: plugins.sparsity.denseFraction ${s.denseFraction} must be smaller than the last phase's share of the tokens (${last.fraction.toFixed(3)})`);
        }
        const dense: SparsityPhaseSettings = { ...settings, dense: true };
        out = [
          ...out.slice(0, -1),
          { ...last, fraction: last.fraction - s.denseFraction },
          { ...last, name: 'dense', fraction: s.denseFraction, optimizer: 'continue', plugins: { ...last.plugins, [PLUGIN_NAME]: dense } },
        ];
      }
      return out;
    },

    async init(ctx) {
      const model = ctx.model;
      totalParams = model.parameterCount();
      masks = new MaskSet(s, pattern, model, ctx.optimizer, routing);
      const mats = maskedMatrices(ctx.config.model, s.layers);
      targets = layerDensities(mats, 1 - s.sparsity, s.distribution);
      const rng = new Rng(ctx.config.seed + 0x5a17);
      for (const spec of model.specs.filter((x) => x.name in mats)) {
        const [k, n] = mats[spec.name]!;
        let mask: Uint8Array;
        if (s.mode === 'gmp') mask = new Uint8Array(k * n).fill(1);
        else {
          let scores: Float32Array;
          if (s.criterion === 'random') fillNormal((scores = new Float32Array(k * n)), 1, rng);
          else scores = ((await model.p(spec.name).data()) as Float32Array).map(Math.abs);
          mask = maskFromScores(scores, [k, n], pattern, targets[spec.name]!);
        }
        masks.add(spec, mask);
      }
      masks.apply();
    },

    phaseStart(ctx: PhaseContext<SparsityPhaseSettings>) {
      routing.active = !ctx.settings.dense;
      masks?.routeAll();
    },

    beforeStep(ctx) {
      if (!isRiglStep(ctx)) return;
      // RigL regrows by the dense gradient: this step's products are computed densely
      routing.denseGradStep = true;
      masks?.routeAll();
    },

    transformGradients(grads) {
      if (!routing.active) return grads;
      const out = { ...grads };
      for (const [name, e] of entries()) {
        const g = grads[name];
        if (!g) continue;
        if (routing.denseGradStep) {
          gradScores.get(name)?.dispose();
          gradScores.set(
            name,
            tf.tidy(() => {
              const a = tf.abs(g);
              if (pattern.kind !== 'block') return a;
              const b = pattern.size;
              return tf.sum(tf.reshape(a, [e.shape[0] / b, b, e.shape[1] / b, b]), [1, 3]);
            }),
          );
        }
        // the block-sparse kernel's weight gradient is already zero outside the kept blocks
        if (e.maskT && !e.kernel) out[name] = tf.mul(g, e.maskT);
      }
      return out;
    },

    async afterStep(ctx) {
      if (!routing.active || !masks) return;
      masks.apply();
      const weight = (name: string) => ctx.model.p(name);
      if (routing.denseGradStep) {
        const { u, total } = sparseSpan(ctx);
        await dropAndGrow(masks, pattern, gradScores, riglFraction(s.regrowFraction, u, total, s.end), weight);
        updates++;
        for (const g of gradScores.values()) g.dispose();
        gradScores = new Map();
        routing.denseGradStep = false;
        masks.routeAll();
      } else if (s.mode === 'gmp') {
        const { u, total } = sparseSpan(ctx);
        const endStep = Math.ceil(s.end * total);
        if (u >= s.start * total && (u % s.interval === 0 || u === endStep)) {
          if (await prune(masks, pattern, targets, s.sparsity, gmpSparsity(s.sparsity, u, total, s.start, s.end), weight)) updates++;
        }
      }
    },

    flops(flops: number, ctx: FlopsContext<SparsityPhaseSettings>) {
      if (ctx.settings.dense) return flops;
      const positions = ctx.rowsPerStep * ctx.layout.positions;
      const mats = maskedMatrices(ctx.config.model, s.layers);
      const planned = ctx.step === undefined || !entries().size;
      const dens = planned ? layerDensities(mats, 1 - (s.mode === 'gmp' ? 0 : s.sparsity), s.distribution) : densities().layers;
      let saved = 0;
      // training FLOPs of a product: forward and both backward products, 3 × the forward's
      for (const spec of paramSpecs(ctx.config.model)) if (spec.name in mats) saved += (1 - dens[spec.name]!) * 3 * productFlopsPerPosition(spec, ctx.config.model);
      return flops - positions * saved;
    },

    metrics() {
      const d = densities();
      let pruned = 0;
      for (const [name, e] of entries()) pruned += Math.round((1 - d.layers[name]!) * e.mask.length);
      const out: Record<string, number> = { density: d.overall, nonzeroParams: totalParams - pruned };
      for (const [name, v] of Object.entries(d.layers)) out[`density.${name.replace(/\.weight$/, '')}`] = v;
      return out;
    },

    summary() {
      if (!masks || !masks.entries.size) return [];
      const d = masks.densities();
      const m = plugin.metrics!({} as PhaseContext<SparsityPhaseSettings>);
      const kernelLayers = [...masks.entries.values()].filter((e) => e.kernel).length;
      const groups = new Map<string, number[]>();
      for (const [name, v] of Object.entries(d.layers)) {
        const key = name.replace(/^blocks\.\d+\./, '').replace(/\.weight$/, '');
        groups.set(key, [...(groups.get(key) ?? []), v]);
      }
      const perLayer = [...groups].map(([k, v]) => `${k} ${v.map((x) => x.toFixed(3)).join('/')}`).join(', ');
      return [
        `sparsity: ${s.mode} ${s.pattern}${s.distribution === 'erk' ? ' (ERK)' : ''}, target ${(100 * s.sparsity).toFixed(1)}% zero${s.denseFraction > 0 ? `, then dense on the last ${(100 * s.denseFraction).toFixed(0)}% of tokens` : ''}; ` +
          `${routing.active ? 'final' : 'before the dense phase, the'} masks keep ${(100 * d.overall).toFixed(1)}% of ${masks.entries.size} matrices; ` +
          `non-zero parameters ${m.nonzeroParams!.toLocaleString('en-US')} of ${totalParams.toLocaleString('en-US')}` +
          (updates ? `; ${updates} mask update(s)` : '') +
          (kernelLayers ? `; ${kernelLayers} matrices on the block-sparse kernel` : ''),
        `sparsity: mask density per matrix${routing.active ? '' : ' (sparse phases)'}, layer by layer: ${perLayer}`,
      ];
    },

    masks() {
      if (!routing.active) return new Map();
      return new Map([...entries()].map(([k, e]) => [k, { shape: e.shape, mask: e.mask.slice() }]));
    },

    densities,

    compiled(ctx) {
      if (ctx.settings.dense) return {};
      if (s.mode !== 'static') return { reason: `${s.mode} masks change during training; only static masks are compiled` };
      const out = new Map<string, CompiledMask>();
      for (const [name, e] of entries()) {
        // the block-sparse kernels where the eager step would use them; lookup tables are masked densely
        const block = pattern.kind === 'block' && s.kernel === 'auto' && e.spec.role !== 'embedding' && e.kept / e.mask.length <= KERNEL_MAX_DENSITY;
        out.set(name, { mask: e.mask.slice(), ...(block ? { block: { size: pattern.size, mask: blockMaskOf(e.mask, e.shape, pattern.size) } } : {}) });
      }
      return { sparsity: { masks: out, sparsity: s.sparsity, pattern: s.pattern } };
    },

    saveState(): PluginState {
      const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
      for (const [name, e] of entries()) tensors[`mask.${name}`] = { shape: [...e.shape], data: Float32Array.from(e.mask) };
      return { json: { updates, pattern: s.pattern, mode: s.mode }, tensors };
    },

    loadState(state: PluginState) {
      const j = (state.json ?? {}) as { updates?: number };
      updates = j.updates ?? 0;
      for (const [name, e] of entries()) {
        const t = state.tensors?.[`mask.${name}`];
        if (!t || t.shape.join('x') !== e.shape.join('x')) throw new PluginError(`checkpoint has no sparsity mask for ${name} (was it trained with other sparsity settings?)`);
        e.mask = Uint8Array.from(t.data, (x) => (x ? 1 : 0));
        e.kept = countKept(e.mask);
        masks!.setTensors(e);
      }
    },
  };
  return plugin;
}
