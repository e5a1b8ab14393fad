/**
 * Pruning masks as plain arrays: patterns (unstructured, N:M, b×b blocks), per-layer densities
 * (uniform or ERK), and selection of the kept entries from scores. A weight matrix is [K, N]
 * (inputs × outputs, the layout `x @ W` uses); a mask is a Uint8Array of K·N entries, 1 = kept.
 *
 * Selection works on "units": single entries for unstructured and N:M masks, b×b blocks for block
 * masks. A unit's score is the sum of its entries' scores (|w| for magnitude, |g| for RigL regrowth).
 */
import { PluginError } from '@patchflow/trainer';

export type Pattern = { kind: 'unstructured' } | { kind: 'nm'; n: number; m: number } | { kind: 'block'; size: number };

export type Distribution = 'uniform' | 'erk';

/** Parses `unstructured`, `nm:N:M` (N kept of every M consecutive inputs) or `block:B`. */
export function parsePattern(s: unknown): Pattern {
  const where = 'plugins.sparsity.pattern';
  if (typeof s !== 'string') throw new PluginError(`invalid config: ${where} must be a string like "unstructured", "nm:2:4" or "block:32", got ${JSON.stringify(s)}`);
  if (s === 'unstructured') return { kind: 'unstructured' };
  let m = /^nm:(\d+):(\d+)$/.exec(s);
  if (m) {
    const n = Number(m[1]);
    const mm = Number(m[2]);
    if (mm < 1 || n < 1) throw new PluginError(`invalid config: ${where} "${s}": N and M must be at least 1`);
    if (n > mm) throw new PluginError(`invalid config: ${where} "${s}": N (${n}) must not exceed M (${mm})`);
    return { kind: 'nm', n, m: mm };
  }
  m = /^block:(\d+)$/.exec(s);
  if (m) {
    const b = Number(m[1]);
    if (b < 1) throw new PluginError(`invalid config: ${where} "${s}": the block size must be at least 1`);
    return { kind: 'block', size: b };
  }
  throw new PluginError(`invalid config: unknown ${where} "${s}" (known: unstructured, nm:N:M such as nm:2:4, block:B such as block:32)`);
}

export function patternName(p: Pattern): string {
  return p.kind === 'unstructured' ? 'unstructured' : p.kind === 'nm' ? `nm:${p.n}:${p.m}` : `block:${p.size}`;
}

/** Why `pattern` cannot mask a [k, n] matrix called `name`, or undefined when it can. */
export function patternMismatch(pattern: Pattern, name: string, [k, n]: readonly number[]): string | undefined {
  if (pattern.kind === 'block' && (k! % pattern.size || n! % pattern.size)) {
    return `block size ${pattern.size} does not divide ${name}'s shape [${k}, ${n}]`;
  }
  if (pattern.kind === 'nm' && k! % pattern.m) return `M = ${pattern.m} does not divide the ${k} inputs of ${name} [${k}, ${n}]`;
  return undefined;
}

/** Number of selection units of a [k, n] matrix under `pattern`. */
export function unitCount(pattern: Pattern, [k, n]: readonly number[]): number {
  return pattern.kind === 'block' ? (k! / pattern.size) * (n! / pattern.size) : k! * n!;
}

/**
 * Per-layer densities whose parameter-weighted mean is `density`. Uniform: every layer the same.
 * ERK (Evci et al. 2020, "Rigging the Lottery"): density ∝ (k + n) / (k·n), capped at 1 (layers that
 * would exceed it are made dense and the rest rescaled).
 */
export function layerDensities(shapes: Record<string, readonly number[]>, density: number, distribution: Distribution): Record<string, number> {
  const names = Object.keys(shapes);
  const size = (s: readonly number[]) => s[0]! * s[1]!;
  if (distribution === 'uniform' || density >= 1) return Object.fromEntries(names.map((n) => [n, density]));
  const total = names.reduce((a, n) => a + size(shapes[n]!), 0);
  const raw = Object.fromEntries(names.map((n) => [n, (shapes[n]![0]! + shapes[n]![1]!) / size(shapes[n]!)]));
  const dense = new Set<string>();
  for (;;) {
    const budget = density * total - [...dense].reduce((a, n) => a + size(shapes[n]!), 0);
    const denom = names.filter((n) => !dense.has(n)).reduce((a, n) => a + raw[n]! * size(shapes[n]!), 0);
    const eps = budget / denom;
    const over = names.filter((n) => !dense.has(n) && eps * raw[n]! > 1);
    if (!over.length) return Object.fromEntries(names.map((n) => [n, dense.has(n) ? 1 : eps * raw[n]!]));
    for (const n of over) dense.add(n);
  }
}

/** Sum of `values` over each unit: the entries themselves, or b×b block sums ([k/b, n/b] row-major). */
export function unitScores(values: Float32Array, shape: readonly number[], pattern: Pattern, abs = true): Float32Array {
  if (pattern.kind !== 'block') return abs ? values.map(Math.abs) : values.slice();
  const [k, n] = shape as [number, number];
  const b = pattern.size;
  const nb = n / b;
  const out = new Float32Array((k / b) * nb);
  for (let i = 0; i < k; i++) {
    const row = i * n;
    const orow = Math.floor(i / b) * nb;
    for (let j = 0; j < n; j++) out[orow + Math.floor(j / b)] += abs ? Math.abs(values[row + j]!) : values[row + j]!;
  }
  return out;
}

/**
 * Indices of the `count` highest scores among the units where `eligible` (if given) is 1. Ties go to
 * the lower index, so the choice is deterministic. Returns a 0/1 array over all units.
 */
export function topUnits(scores: Float32Array, count: number, eligible?: Uint8Array): Uint8Array {
  const n = scores.length;
  const out = new Uint8Array(n);
  const cand: number[] = [];
  for (let i = 0; i < n; i++) if (!eligible || eligible[i]) cand.push(i);
  count = Math.max(0, Math.min(count, cand.length));
  if (count === 0) return out;
  if (count === cand.length) {
    for (const i of cand) out[i] = 1;
    return out;
  }
  const vals = Float32Array.from(cand, (i) => scores[i]!);
  const sorted = vals.slice().sort();
  const thr = sorted[vals.length - count]!;
  let kept = 0;
  for (const i of cand) if (scores[i]! > thr) (out[i] = 1), kept++;
  for (const i of cand) {
    if (kept >= count) break;
    if (scores[i] === thr) (out[i] = 1), kept++;
  }
  return out;
}

/** Expands a unit mask to an entry mask of the [k, n] matrix. */
export function unitsToMask(units: Uint8Array, shape: readonly number[], pattern: Pattern): Uint8Array {
  if (pattern.kind !== 'block') return units;
  const [k, n] = shape as [number, number];
  const b = pattern.size;
  const nb = n / b;
  const out = new Uint8Array(k * n);
  for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) out[i * n + j] = units[Math.floor(i / b) * nb + Math.floor(j / b)]!;
  return out;
}

/** The block mask [k/b, n/b] (int32, 1 = kept) of an entry mask made of b×b blocks. */
export function blockMaskOf(mask: Uint8Array, shape: readonly number[], b: number): Int32Array {
  const [k, n] = shape as [number, number];
  const nb = n / b;
  const out = new Int32Array((k / b) * nb);
  for (let i = 0; i < k; i += b) for (let j = 0; j < n; j += b) out[(i / b) * nb + j / b] = mask[i * n + j]!;
  return out;
}

/**
 * A mask of `density` over a [k, n] matrix from entry scores (higher = kept): the top units overall
 * for unstructured and block patterns; for N:M the top N of every M consecutive inputs (rows) of each
 * output column, whatever `density` says (N:M fixes it at N/M).
 */
export function maskFromScores(scores: Float32Array, shape: readonly number[], pattern: Pattern, density: number): Uint8Array {
  const [k, n] = shape as [number, number];
  if (pattern.kind === 'nm') {
    const out = new Uint8Array(k * n);
    const { n: keep, m } = pattern;
    const idx = new Array<number>(m);
    for (let j = 0; j < n; j++) {
      for (let g = 0; g < k; g += m) {
        for (let r = 0; r < m; r++) idx[r] = (g + r) * n + j;
        idx.sort((a, b) => scores[b]! - scores[a]! || a - b);
        for (let r = 0; r < keep; r++) out[idx[r]!] = 1;
      }
    }
    return out;
  }
  const units = unitScores(scores, shape, pattern, false);
  return unitsToMask(topUnits(units, Math.round(density * units.length)), shape, pattern);
}

export function countKept(mask: Uint8Array): number {
  let c = 0;
  for (let i = 0; i < mask.length; i++) c += mask[i]!;
  return c;
}

/** Checks that `mask` is made of whole b×b blocks / keeps exactly N of every M; returns why not. */
export function checkPattern(mask: Uint8Array, shape: readonly number[], pattern: Pattern): string | undefined {
  const [k, n] = shape as [number, number];
  if (pattern.kind === 'block') {
    const b = pattern.size;
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < n; j++) {
        const corner = mask[(i - (i % b)) * n + (j - (j % b))];
        if (mask[i * n + j] !== corner) return `entry (${i}, ${j}) differs from its block's corner`;
      }
    }
  } else if (pattern.kind === 'nm') {
    for (let j = 0; j < n; j++) {
      for (let g = 0; g < k; g += pattern.m) {
        let c = 0;
        for (let r = 0; r < pattern.m; r++) c += mask[(g + r) * n + j]!;
        if (c !== pattern.n) return `group rows ${g}..${g + pattern.m - 1} of column ${j} keeps ${c}, not ${pattern.n}`;
      }
    }
  }
  return undefined;
}
