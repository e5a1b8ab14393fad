/**
 * Token (patch) embedding with optional learned positions, and its backward.
 *   forward:  x[r·T + t, :] = (1/K) Σ_{k<K} E[ids[r, t·K + k], :]  (+ pos[t, :])
 * ids: i32 [rows, T·K]; E: [V, d]; pos: [T, d] (at least T rows); x: [rows·T, d]. K = 1 is the token case.
 *   backward: dE[v, :] (+)= (1/K) Σ_{p ∈ uses(v)} dx[p / K, :]
 * where uses(v) lists the flat input positions p (= r·T·K + t·K + k) holding id v, ascending, as a
 * CSR inverse index built on the host per batch (embeddingCsr): offsets [V + 1], positions [rows·T·K].
 * One workgroup per vocabulary row sums its list in that order (deterministic, no atomics); rows no
 * input uses get 0 (or keep their value when accumulating, e.g. a tied LM head's gradient already there).
 *   dpos[t, :] (+)= Σ_r dx[r·T + t, :]                             (rows in ascending order)
 */
import { dim, f32lit, grid, makeKernel, type KernelSpec } from './kernel.js';

export interface EmbeddingParams {
  rows: number;
  /** Positions per row (T). */
  t: number;
  d: number;
  vocab: number;
  /** Tokens per position (patch size K); default 1. */
  k?: number;
  /** Add learned positions pos [T, d]. */
  positions?: boolean;
}

const WG = 64;

/** Bindings: ids (read i32), table (read [V, d]), [pos (read [T, d])], x (out [rows·T, d]). */
export function embeddingForward(p: EmbeddingParams): KernelSpec {
  const R = dim('embedding rows', p.rows);
  const T = dim('embedding t', p.t);
  const D = dim('embedding d', p.d);
  const V = dim('embedding vocab', p.vocab);
  const K = dim('embedding k', p.k ?? 1);
  const g = grid(R * T);
  const bindings = [
    { name: 'ids', access: 'read' as const },
    { name: 'table', access: 'read' as const },
    ...(p.positions ? [{ name: 'pos', access: 'read' as const }] : []),
    { name: 'x', access: 'read_write' as const, overwrite: true },
  ];
  return makeKernel({
    label: `embedding ${R}x${T}x${D} k=${K}${p.positions ? ' +pos' : ''}`,
    bindings,
    types: { ids: 'array<i32>', table: 'array<f32>', pos: 'array<f32>', x: 'array<f32>' },
    workgroups: g.workgroups,
    body: `@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let row = ${g.flat};
  if (row >= ${R * T}u) { return; }
  let t = row % ${T}u;
  for (var c = lid; c < ${D}u; c = c + ${WG}u) {
    var s = 0.0;
    for (var k = 0u; k < ${K}u; k = k + 1u) {
      let id = min(u32(ids[row * ${K}u + k]), ${V - 1}u);
      s = s + table[id * ${D}u + c];
    }
    ${K > 1 ? `s = s / ${f32lit(K)};` : ''}
    x[row * ${D}u + c] = s${p.positions ? ` + pos[t * ${D}u + c]` : ''};
  }
}`,
    bytes: R * T * D * 4 * (K + 1 + (p.positions ? 1 : 0)),
  });
}

export interface EmbeddingBackwardParams {
  rows: number;
  t: number;
  d: number;
  vocab: number;
  k?: number;
  /** dE += (a tied LM head's weight gradient already in dE). */
  accumulate?: boolean;
}

/** Bindings: offsets (read i32 [V + 1]), positions (read i32 [rows·T·K]), dx (read [rows·T, d]), dE (table gradient [V, d]). */
export function embeddingBackward(p: EmbeddingBackwardParams): KernelSpec {
  const R = dim('embedding rows', p.rows);
  const T = dim('embedding t', p.t);
  const D = dim('embedding d', p.d);
  const V = dim('embedding vocab', p.vocab);
  const K = dim('embedding k', p.k ?? 1);
  const g = grid(V);
  return makeKernel({
    label: `embedding backward ${V}x${D} from ${R}x${T} k=${K}${p.accumulate ? ' +=' : ''}`,
    bindings: [
      { name: 'offsets', access: 'read' },
      { name: 'positions', access: 'read' },
      { name: 'dx', access: 'read' },
      { name: 'dE', access: 'read_write', overwrite: !p.accumulate },
    ],
    types: { offsets: 'array<i32>', positions: 'array<i32>', dx: 'array<f32>', dE: 'array<f32>' },
    workgroups: g.workgroups,
    body: `@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let v = ${g.flat};
  if (v >= ${V}u) { return; }
  let b = u32(offsets[v]);
  let e = u32(offsets[v + 1u]);
  for (var c = lid; c < ${D}u; c = c + ${WG}u) {
    var s = 0.0;
    for (var i = b; i < e; i = i + 1u) { s = s + dx[(u32(positions[i]) / ${K}u) * ${D}u + c]; }
    ${K > 1 ? `s = s / ${f32lit(K)};` : ''}
    dE[v * ${D}u + c] = ${p.accumulate ? 'dE[v * ' + D + 'u + c] + s' : 's'};
  }
}`,
  });
}

/** Bindings: dx (read [rows·T, d]), dpos (gradient [T, d]). */
export function positionBackward(p: { rows: number; t: number; d: number; accumulate?: boolean }): KernelSpec {
  const R = dim('positions rows', p.rows);
  const T = dim('positions t', p.t);
  const D = dim('positions d', p.d);
  return makeKernel({
    label: `positions backward ${T}x${D} from ${R} rows${p.accumulate ? ' +=' : ''}`,
    bindings: [
      { name: 'dx', access: 'read' },
      { name: 'dpos', access: 'read_write', overwrite: !p.accumulate },
    ],
    types: { dx: 'array<f32>', dpos: 'array<f32>' },
    workgroups: [T, 1, 1],
    body: `@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let t = wid.x;
  for (var c = lid; c < ${D}u; c = c + ${WG}u) {
    var s = 0.0;
    for (var r = 0u; r < ${R}u; r = r + 1u) { s = s + dx[(r * ${T}u + t) * ${D}u + c]; }
    dpos[t * ${D}u + c] = ${p.accumulate ? `dpos[t * ${D}u + c] + s` : 's'};
  }
}`,
  });
}

/**
 * The CSR inverse index of `ids` (flat input positions, each id in [0, vocab)): offsets [V + 1] and the
 * positions using each id, ascending. Host work per batch, O(ids + V).
 */
export function embeddingCsr(ids: Int32Array, vocab: number): { offsets: Int32Array; positions: Int32Array } {
  const offsets = new Int32Array(vocab + 1);
  for (const id of ids) {
    if (!(id >= 0 && id < vocab)) throw new Error(`embeddingCsr: id ${id} outside [0, ${vocab})`);
    offsets[id + 1]!++;
  }
  for (let v = 0; v < vocab; v++) offsets[v + 1]! += offsets[v]!;
  const fillAt = offsets.slice(0, vocab);
  const positions = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) positions[fillAt[ids[i]!]!++] = i;
  return { offsets, positions };
}
