/**
 * Sparse training from scratch as a `TrainerPlugin` (after Srinivasan et al., "Training Large
 * Language Models Efficiently with Sparsity and Dataflow", arXiv 2304.05511).
 *
 * Masks cover the projection matrices (attention qkv/proj, MLP fc/proj; the embeddings only when
 * asked; never LayerNorm or biases). Modes:
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
 * the backend's block-sparse kernel (`blockSparseMatMul`) when it has one, so the step gets faster,
 * not only cheaper on paper.
 */
import { tf, blockSparseMatMul, hasFusedKernel } from '@patchflow/tensor';
import {
  PluginError,
  addToAllPhases,
  paramSpecs,
  type FlopsContext,
  type GPT,
  type AdamW,
  type PhaseContext,
  type PhaseSpec,
  type PluginState,
  type StepContext,
  type TrainConfig,
  type TrainerPlugin,
  type ParamRole,
  Rng,
  fillNormal,
} from '@patchflow/trainer';
import {
  type Distribution,
  type Pattern,
  blockMaskOf,
  countKept,
  layerDensities,
  maskFromScores,
  parsePattern,
  patternMismatch,
  patternName,
  topUnits,
  unitCount,
  unitScores,
  unitsToMask,
} from './masks.js';
import { gmpSparsity, riglFraction } from './schedules.js';

export * from './masks.js';
export * from './schedules.js';

export const PLUGIN_NAME = 'sparsity';

export type SparsityMode = 'static' | 'gmp' | 'rigl';
export type LayerGroup = 'attention' | 'mlp' | 'embeddings';

export interface SparsityOptions {
  /** Share of each masked matrix's entries that are zero, in [0, 1). Default 0.75; N:M implies 1 − N/M. */
  sparsity?: number;
  /** 'unstructured' (default), 'nm:N:M', or 'block:B'. */
  pattern?: string;
  /** 'static' (default), 'gmp', or 'rigl'. */
  mode?: SparsityMode;
  /** Share of the training tokens in a final dense phase, in [0, 1). Default 0. */
  denseFraction?: number;
  /** Per-layer densities: 'uniform' (default) or 'erk'. */
  distribution?: Distribution;
  /** How a static mask is chosen at initialisation: 'magnitude' (default) or 'random'. */
  criterion?: 'magnitude' | 'random';
  /** Matrices to mask. Default ['attention', 'mlp']. */
  layers?: LayerGroup[];
  /** gmp / rigl: steps between mask updates. Default 100 (rigl), 20 (gmp). */
  interval?: number;
  /** gmp: pruning starts at this share of the sparse steps. Default 0.1. */
  start?: number;
  /** gmp / rigl: masks are final from this share of the sparse steps on. Default 0.75. */
  end?: number;
  /** rigl: α, the initial share of kept units dropped and regrown per update. Default 0.3. */
  regrowFraction?: number;
  /** 'auto' (default): block masks use the backend's block-sparse kernel; 'dense': always dense products. */
  kernel?: 'auto' | 'dense';
}

export interface SparsitySettings {
  sparsity: number;
  pattern: string;
  mode: SparsityMode;
  denseFraction: number;
  distribution: Distribution;
  criterion: 'magnitude' | 'random';
  layers: LayerGroup[];
  interval: number;
  start: number;
  end: number;
  regrowFraction: number;
  kernel: 'auto' | 'dense';
}

/**
 * The block-sparse kernel is used for a layer whose density is at most this. Above it a dense GEMM
 * of the zero-filled matrix is as fast (see `patchflow bench sparsity`'s kernel table).
 */
export const KERNEL_MAX_DENSITY = 0.6;

const KEYS: (keyof SparsitySettings)[] = ['sparsity', 'pattern', 'mode', 'denseFraction', 'distribution', 'criterion', 'layers', 'interval', 'start', 'end', 'regrowFraction', 'kernel'];
const FLAG: Partial<Record<keyof SparsitySettings, string>> = { sparsity: '--sparsity', pattern: '--sparsity-pattern', mode: '--sparsity-mode', denseFraction: '--dense-fraction' };

function bad(key: keyof SparsitySettings, what: string, got: unknown): PluginError {
  const flag = FLAG[key] ? ` (${FLAG[key]})` : '';
  return new PluginError(`invalid config: plugins.sparsity.${key}${flag} ${what}, got ${JSON.stringify(got)}`);
}

function fractionIn(key: keyof SparsitySettings, v: unknown, lo: number, hiOpen: number, closedHi = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || (closedHi ? v > hiOpen : v >= hiOpen)) {
    throw bad(key, `must be a number in [${lo}, ${hiOpen}${closedHi ? ']' : ')'}`, v);
  }
  return v;
}

/** Checks and completes the options; every mistake is a PluginError (reported as a ConfigError). */
export function resolveSparsityOptions(opts: SparsityOptions | Record<string, unknown> = {}): SparsitySettings {
  const o = opts as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!(KEYS as string[]).includes(k)) throw new PluginError(`invalid config: unknown key "plugins.sparsity.${k}" (known: ${KEYS.join(', ')})`);
  }
  const pattern = parsePattern(o.pattern ?? 'unstructured');
  const mode = o.mode ?? 'static';
  if (mode !== 'static' && mode !== 'gmp' && mode !== 'rigl') throw bad('mode', 'must be "static", "gmp" or "rigl"', mode);
  let sparsity: number;
  if (pattern.kind === 'nm') {
    const implied = 1 - pattern.n / pattern.m;
    if (o.sparsity !== undefined && (typeof o.sparsity !== 'number' || Math.abs(o.sparsity - implied) > 1e-9)) {
      throw bad('sparsity', `must be ${implied} (1 − N/M) for pattern ${patternName(pattern)}, or left out`, o.sparsity);
    }
    if (mode !== 'static') throw bad('mode', `must be "static" with an N:M pattern (its masks keep exactly N of every M; gmp and rigl work with unstructured and block patterns)`, mode);
    sparsity = implied;
  } else {
    sparsity = fractionIn('sparsity', o.sparsity ?? 0.75, 0, 1);
  }
  const denseFraction = fractionIn('denseFraction', o.denseFraction ?? 0, 0, 1);
  const distribution = o.distribution ?? 'uniform';
  if (distribution !== 'uniform' && distribution !== 'erk') throw bad('distribution', 'must be "uniform" or "erk"', distribution);
  if (distribution === 'erk' && pattern.kind === 'nm') throw bad('distribution', 'must be "uniform" with an N:M pattern', distribution);
  const criterion = o.criterion ?? 'magnitude';
  if (criterion !== 'magnitude' && criterion !== 'random') throw bad('criterion', 'must be "magnitude" or "random"', criterion);
  const layersRaw = o.layers ?? ['attention', 'mlp'];
  const layers = (typeof layersRaw === 'string' ? layersRaw.split(',').map((s) => s.trim()) : layersRaw) as unknown[];
  if (!Array.isArray(layers) || !layers.length || layers.some((l) => l !== 'attention' && l !== 'mlp' && l !== 'embeddings')) {
    throw bad('layers', 'must be a non-empty list of "attention", "mlp", "embeddings"', layersRaw);
  }
  const interval = o.interval ?? (mode === 'gmp' ? 20 : 100);
  if (typeof interval !== 'number' || !Number.isInteger(interval) || interval < 1) throw bad('interval', 'must be an integer >= 1', interval);
  const start = fractionIn('start', o.start ?? 0.1, 0, 1);
  const end = fractionIn('end', o.end ?? 0.75, 0, 1, true);
  if (end <= start && mode === 'gmp') throw bad('end', `must be greater than start (${start})`, end);
  const regrowFraction = fractionIn('regrowFraction', o.regrowFraction ?? 0.3, 0, 1, true);
  const kernel = o.kernel ?? 'auto';
  if (kernel !== 'auto' && kernel !== 'dense') throw bad('kernel', 'must be "auto" or "dense"', kernel);
  return {
    sparsity,
    pattern: patternName(pattern),
    mode,
    denseFraction,
    distribution,
    criterion,
    layers: [...new Set(layers as LayerGroup[])],
    interval,
    start,
    end,
    regrowFraction,
    kernel,
  };
}

/** The roles (spec.ts) each layer group masks. */
const GROUP_ROLES: Record<LayerGroup, readonly ParamRole[]> = {
  attention: ['attn.qkv', 'attn.out'],
  mlp: ['mlp.in', 'mlp.out'],
  embeddings: ['embedding', 'head'],
};

/** The weight matrices a setting masks, with their [K, N] shapes, for a model config (read from the model description). */
export function maskedMatrices(model: TrainConfig['model'], layers: readonly LayerGroup[]): Record<string, [number, number]> {
  const roles = new Set(layers.flatMap((l) => GROUP_ROLES[l]));
  const out: Record<string, [number, number]> = {};
  for (const s of paramSpecs(model)) if (roles.has(s.role)) out[s.name] = [s.shape[0]!, s.shape[1]!];
  return out;
}

/**
 * Dense training FLOPs per position that the products with `name` cost (forward + both backward
 * products, 6·K·N), or 0 when the matrix is not used in a product (an untied token embedding is a lookup).
 */
function productFlops(name: string, shape: readonly number[], tied: boolean): number {
  if (name === 'tok_emb.weight' && !tied) return 0;
  return 6 * shape[0]! * shape[1]!;
}

interface MaskEntry {
  shape: [number, number];
  mask: Uint8Array;
  kept: number;
  /** float32 0/1 [K, N] (absent while the mask keeps everything). */
  maskT?: tf.Tensor;
  /** int32 [K/b, N/b] (block patterns). */
  blockT?: tf.Tensor2D;
  /** Products currently go through the block-sparse kernel. */
  kernel: boolean;
}

/** What `sparseTraining()` returns: the plugin, plus read access to its masks. */
export interface SparsityPlugin extends TrainerPlugin {
  readonly settings: SparsitySettings;
  /** Current masks by parameter name (copies), or an empty map in a dense phase. */
  masks(): Map<string, { shape: [number, number]; mask: Uint8Array }>;
  /** Density of each masked matrix and over all of them (1 in a dense phase). */
  densities(): { overall: number; layers: Record<string, number> };
  /** Mask updates done so far (gmp prunes, rigl drop/regrow rounds). */
  readonly updates: number;
}

/** The sparse training plugin. */
export function sparseTraining(opts: SparsityOptions | Record<string, unknown> = {}): SparsityPlugin {
  const s = resolveSparsityOptions(opts);
  const pattern: Pattern = parsePattern(s.pattern);
  const entries = new Map<string, MaskEntry>();
  let targets: Record<string, number> = {};
  let model: GPT | undefined;
  let optimizer: AdamW | undefined;
  let active = true;
  let updates = 0;
  let denseGradStep = false;
  let gradScores = new Map<string, tf.Tensor>();
  let totalParams = 0;

  const setTensors = (name: string, e: MaskEntry) => {
    e.maskT?.dispose();
    e.blockT?.dispose();
    e.maskT = undefined;
    e.blockT = undefined;
    if (e.kept < e.mask.length) e.maskT = tf.keep(tf.tensor(Float32Array.from(e.mask), e.shape));
    if (pattern.kind === 'block') e.blockT = tf.keep(tf.tensor2d(blockMaskOf(e.mask, e.shape, pattern.size), [e.shape[0] / pattern.size, e.shape[1] / pattern.size], 'int32'));
    routeProducts(name, e);
  };

  /** Sends the matrix's products through the block-sparse kernel when that pays, else dense. */
  const routeProducts = (name: string, e: MaskEntry) => {
    const usable =
      active && !denseGradStep && s.kernel === 'auto' && pattern.kind === 'block' && !!e.blockT &&
      e.kept / e.mask.length <= KERNEL_MAX_DENSITY && hasFusedKernel('PfBlockSparseMatMul') &&
      !(name === 'tok_emb.weight');
    e.kernel = usable;
    if (!model || name === 'tok_emb.weight') return;
    if (usable) {
      const b = (pattern as { size: number }).size;
      model.setMatMul(name, (x, w, bias) => blockSparseMatMul(x, w, e.blockT!, b, bias));
    } else model.setMatMul(name, undefined);
  };

  const applyMasks = () => {
    tf.tidy(() => {
      for (const [name, e] of entries) if (e.maskT) model!.p(name).assign(tf.mul(model!.p(name), e.maskT));
    });
  };

  const replaceMask = (name: string, e: MaskEntry, next: Uint8Array) => {
    // moments survive only where the entry was kept before and after
    const both = new Float32Array(next.length);
    for (let i = 0; i < next.length; i++) both[i] = e.mask[i]! & next[i]!;
    tf.tidy(() => {
      const keep = tf.tensor(both, e.shape);
      optimizer!.maskMoments(name, keep);
      model!.p(name).assign(tf.mul(model!.p(name), keep));
    });
    e.mask = next;
    e.kept = countKept(next);
    setTensors(name, e);
  };

  /** The kept units (entries, or blocks) of a mask, as 0/1. */
  const keptUnits = (e: MaskEntry): Uint8Array =>
    pattern.kind === 'block' ? Uint8Array.from(blockMaskOf(e.mask, e.shape, pattern.size)) : e.mask.slice();

  /** Sparse steps of the plan (phases with this plugin, not dense) and the global step before them. */
  const sparseSpan = (ctx: StepContext) => {
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
  };

  const isRiglStep = (ctx: StepContext) => {
    if (s.mode !== 'rigl' || !active) return false;
    const { u, total } = sparseSpan(ctx);
    return u > 0 && u % s.interval === 0 && riglFraction(s.regrowFraction, u, total, s.end) > 0;
  };

  const dropAndGrow = async (ctx: StepContext) => {
    const { u, total } = sparseSpan(ctx);
    const f = riglFraction(s.regrowFraction, u, total, s.end);
    for (const [name, e] of entries) {
      const g = gradScores.get(name);
      if (!g) continue;
      const grad = (await g.data()) as Float32Array;
      const w = (await model!.p(name).data()) as Float32Array;
      const units = unitCount(pattern, e.shape);
      const was = keptUnits(e);
      const nKept = countKept(was);
      const d = Math.min(Math.round(f * nKept), units - nKept);
      if (d <= 0) continue;
      const stay = topUnits(unitScores(w, e.shape, pattern), nKept - d, was);
      const notBefore = was.map((x) => 1 - x);
      const grow = topUnits(grad, d, notBefore);
      const next = new Uint8Array(units);
      for (let i = 0; i < units; i++) next[i] = stay[i]! | grow[i]!;
      replaceMask(name, e, unitsToMask(next, e.shape, pattern));
    }
    updates++;
  };

  const prune = async (sparsityNow: number) => {
    let changed = false;
    for (const [name, e] of entries) {
      const layerTarget = 1 - (1 - targets[name]!) * (s.sparsity > 0 ? sparsityNow / s.sparsity : 0);
      const units = unitCount(pattern, e.shape);
      const keepUnits = Math.round(layerTarget * units);
      const was = keptUnits(e);
      if (keepUnits >= countKept(was)) continue;
      const w = (await model!.p(name).data()) as Float32Array;
      const next = topUnits(unitScores(w, e.shape, pattern), keepUnits, was);
      replaceMask(name, e, unitsToMask(next, e.shape, pattern));
      changed = true;
    }
    if (changed) updates++;
  };

  /** Densities of the masks themselves (also in a dense phase, where they no longer apply). */
  const maskDensities = () => {
    const layers: Record<string, number> = {};
    let kept = 0;
    let size = 0;
    for (const [name, e] of entries) {
      layers[name] = e.kept / e.mask.length;
      kept += e.kept;
      size += e.mask.length;
    }
    return { overall: size ? kept / size : 1, layers };
  };

  /** Densities in effect: the masks', or 1 everywhere in a dense phase. */
  const densities = () => {
    const d = maskDensities();
    if (active) return d;
    return { overall: 1, layers: Object.fromEntries(Object.keys(d.layers).map((n) => [n, 1])) };
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
        if (why) throw new PluginError(`invalid config: plugins.sparsity.pattern (--sparsity-pattern) ${s.pattern}: ${why}`);
      }
      const settings = { ...s } as unknown as Record<string, unknown>;
      let out = addToAllPhases(phases, PLUGIN_NAME, settings);
      if (s.denseFraction > 0) {
        const last = out[out.length - 1]!;
        if (last.fraction <= s.denseFraction) {
          throw new PluginError(`invalid config: plugins.sparsity.denseFraction (--dense-fraction) ${s.denseFraction} must be smaller than the last phase's share of the tokens (${last.fraction.toFixed(3)})`);
        }
        out = [
          ...out.slice(0, -1),
          { ...last, fraction: last.fraction - s.denseFraction },
          { ...last, name: 'dense', fraction: s.denseFraction, optimizer: 'continue', plugins: { ...last.plugins, [PLUGIN_NAME]: { ...settings, dense: true } } },
        ];
      }
      return out;
    },

    async init(ctx) {
      model = ctx.model;
      optimizer = ctx.optimizer;
      totalParams = model.parameterCount();
      const mats = maskedMatrices(ctx.config.model, s.layers);
      targets = layerDensities(mats, 1 - s.sparsity, s.distribution);
      const rng = new Rng(ctx.config.seed + 0x5a17);
      for (const [name, shape] of Object.entries(mats)) {
        let mask: Uint8Array;
        if (s.mode === 'gmp') mask = new Uint8Array(shape[0] * shape[1]).fill(1);
        else {
          let scores: Float32Array;
          if (s.criterion === 'random') fillNormal((scores = new Float32Array(shape[0] * shape[1])), 1, rng);
          else scores = ((await model.p(name).data()) as Float32Array).map(Math.abs);
          mask = maskFromScores(scores, shape, pattern, targets[name]!);
        }
        const e: MaskEntry = { shape, mask, kept: countKept(mask), kernel: false };
        entries.set(name, e);
        setTensors(name, e);
      }
      applyMasks();
    },

    phaseStart(ctx: PhaseContext) {
      active = !(ctx.settings as { dense?: boolean }).dense;
      for (const [name, e] of entries) routeProducts(name, e);
    },

    beforeStep(ctx: StepContext) {
      if (!isRiglStep(ctx)) return;
      // RigL regrows by the dense gradient: this step's products are computed densely
      denseGradStep = true;
      for (const [name, e] of entries) routeProducts(name, e);
    },

    transformGradients(grads) {
      if (!active) return grads;
      const out = { ...grads };
      for (const [name, e] of entries) {
        const g = grads[name];
        if (!g) continue;
        if (denseGradStep) {
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

    async afterStep(ctx: StepContext) {
      if (!active) return;
      applyMasks();
      if (denseGradStep) {
        await dropAndGrow(ctx);
        for (const g of gradScores.values()) g.dispose();
        gradScores = new Map();
        denseGradStep = false;
        for (const [name, e] of entries) routeProducts(name, e);
      } else if (s.mode === 'gmp') {
        const { u, total } = sparseSpan(ctx);
        const endStep = Math.ceil(s.end * total);
        if (u >= s.start * total && (u % s.interval === 0 || u === endStep)) await prune(gmpSparsity(s.sparsity, u, total, s.start, s.end));
      }
    },

    flops(flops: number, ctx: FlopsContext) {
      if ((ctx.settings as { dense?: boolean }).dense) return flops;
      const positions = ctx.rowsPerStep * ctx.layout.positions;
      const mats = maskedMatrices(ctx.config.model, s.layers);
      const planned = ctx.step === undefined || !entries.size;
      const dens = planned ? layerDensities(mats, 1 - (s.mode === 'gmp' ? 0 : s.sparsity), s.distribution) : densities().layers;
      let saved = 0;
      for (const [name, shape] of Object.entries(mats)) saved += (1 - dens[name]!) * productFlops(name, shape, ctx.config.model.tiedEmbeddings);
      return flops - positions * saved;
    },

    metrics() {
      const d = densities();
      let pruned = 0;
      for (const [name, e] of entries) pruned += Math.round((1 - d.layers[name]!) * e.mask.length);
      const out: Record<string, number> = { density: d.overall, nonzeroParams: totalParams - pruned };
      for (const [name, v] of Object.entries(d.layers)) out[`density.${name.replace(/\.weight$/, '')}`] = v;
      return out;
    },

    summary() {
      if (!entries.size) return [];
      const d = maskDensities();
      const m = plugin.metrics!({} as PhaseContext);
      const kernelLayers = [...entries.values()].filter((e) => e.kernel).length;
      const groups = new Map<string, number[]>();
      for (const [name, v] of Object.entries(d.layers)) {
        const key = name.replace(/^blocks\.\d+\./, '').replace(/\.weight$/, '');
        groups.set(key, [...(groups.get(key) ?? []), v]);
      }
      const perLayer = [...groups].map(([k, v]) => `${k} ${v.map((x) => x.toFixed(3)).join('/')}`).join(', ');
      return [
        `sparsity: ${s.mode} ${s.pattern}${s.distribution === 'erk' ? ' (ERK)' : ''}, target ${(100 * s.sparsity).toFixed(1)}% zero${s.denseFraction > 0 ? `, then dense on the last ${(100 * s.denseFraction).toFixed(0)}% of tokens` : ''}; ` +
          `${active ? 'final' : 'before the dense phase, the'} masks keep ${(100 * d.overall).toFixed(1)}% of ${entries.size} matrices; ` +
          `non-zero parameters ${m.nonzeroParams!.toLocaleString('en-US')} of ${totalParams.toLocaleString('en-US')}` +
          (updates ? `; ${updates} mask update(s)` : '') +
          (kernelLayers ? `; ${kernelLayers} matrices on the block-sparse kernel` : ''),
        `sparsity: mask density per matrix${active ? '' : ' (sparse phases)'}, layer by layer: ${perLayer}`,
      ];
    },

    masks() {
      if (!active) return new Map();
      return new Map([...entries].map(([k, e]) => [k, { shape: e.shape, mask: e.mask.slice() }]));
    },

    densities,

    saveState(): PluginState {
      const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
      for (const [name, e] of entries) tensors[`mask.${name}`] = { shape: [...e.shape], data: Float32Array.from(e.mask) };
      return { json: { updates, pattern: s.pattern, mode: s.mode }, tensors };
    },

    loadState(state: PluginState) {
      const j = (state.json ?? {}) as { updates?: number };
      updates = j.updates ?? 0;
      for (const [name, e] of entries) {
        const t = state.tensors?.[`mask.${name}`];
        if (!t || t.shape.join('x') !== e.shape.join('x')) throw new PluginError(`checkpoint has no sparsity mask for ${name} (was it trained with other sparsity settings?)`);
        e.mask = Uint8Array.from(t.data, (x) => (x ? 1 : 0));
        e.kept = countKept(e.mask);
        setTensors(name, e);
      }
    },
  };
  return plugin;
}
