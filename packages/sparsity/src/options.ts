/**
 * The sparsity plugin's options: what a config's `plugins.sparsity` entry may say, its defaults and
 * checks, and which matrices a setting masks (by their role in the model description).
 */
import { PluginError, paramSpecs, type ParamRole, type TrainConfig } from '@patchflow/trainer';
import { type Distribution, parsePattern, patternName } from './masks.js';

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
function bad(key: keyof SparsitySettings, what: string, got: unknown): PluginError {
  return new PluginError(`invalid config: plugins.sparsity.${key} ${what}, got ${JSON.stringify(got)}`);
}

function fractionIn(key: keyof SparsitySettings, v: unknown, lo: number, hiOpen: number, closedHi = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || (closedHi ? v > hiOpen : v >= hiOpen)) {
    throw bad(key, `must be a number in [${lo}, ${hiOpen}${closedHi ? ']' : ')'}`, v);
  }
  return v;
}

/** Checks and completes the options; every mistake is a PluginError naming the config key. */
export function resolveSparsityOptions(opts: SparsityOptions = {}): SparsitySettings {
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
