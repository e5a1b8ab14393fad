/**
 * Cross-entropy with K labels per row (patch-level training; K = 1 is next-token), fused with its
 * gradient, as @patchflow/tensor ops.ts crossEntropy plus trainer's label smoothing (plugins/examples.ts):
 *   lse   = log Σ_v exp(logits[r, v])
 *   loss[r] = (1 − ε) · mean_k (lse − logits[r, label[r, k]]) + ε · (lse − mean_v logits[r, v])
 *   logits[r, v] ← gradScale · (softmax(logits[r])_v − (1 − ε) · #{k : label[r, k] = v} / K − ε / V)
 * i.e. d(gradScale · Σ_r loss[r]) / d logits, written in place over the logits (no probability tensor
 * is ever stored). gradScale defaults to 1 / rows (the trainer's mean over positions). Labels outside
 * [0, V) are not allowed.
 *
 * lossSum: out[0] = scale · Σ_r loss[r], one workgroup, fixed-order strided sums + tree: deterministic.
 */
import { dim, f32lit, grid, makeKernel, type KernelSpec } from './kernel.js';

export interface CrossEntropyParams {
  rows: number;
  vocab: number;
  /** Labels per row (K). */
  k?: number;
  /** Label smoothing ε in [0, 1). */
  smoothing?: number;
  /** Multiplier of the gradient (default 1 / rows). */
  gradScale?: number;
  /**
   * Dynamic loss scaling (f16 mixed precision): bind `scaler` (read f32 [4], lossScaleState) after
   * `loss`; the gradient is also multiplied by scaler[0], the current loss scale.
   */
  lossScale?: boolean;
}

const WG = 256;
const tree = (arr: string, op: (a: string, b: string) => string) => `
  workgroupBarrier();
  for (var w = ${WG / 2}u; w > 0u; w = w >> 1u) {
    if (lid < w) { ${arr}[lid] = ${op(`${arr}[lid]`, `${arr}[lid + w]`)}; }
    workgroupBarrier();
  }`;

/** Bindings: logits (rw [rows, vocab]: in logits, out gradient), labels (read i32 [rows, k]), loss (out [rows]). */
export function crossEntropy(p: CrossEntropyParams): KernelSpec {
  const R = dim('crossEntropy rows', p.rows);
  const V = dim('crossEntropy vocab', p.vocab);
  const K = dim('crossEntropy k', p.k ?? 1);
  if (K > WG) throw new Error(`crossEntropy: at most ${WG} labels per row, got ${K}`);
  const eps = p.smoothing ?? 0;
  if (!(eps >= 0 && eps < 1)) throw new Error(`crossEntropy: smoothing must be in [0, 1), got ${eps}`);
  const gs = p.gradScale ?? 1 / R;
  const g = grid(R);
  const hard = f32lit((1 - eps) / K);
  return makeKernel({
    label: `crossEntropy ${R}x${V} k=${K}${eps ? ` smoothing=${eps}` : ''}${p.lossScale ? ' ×lossScale' : ''}`,
    bindings: [
      { name: 'logits', access: 'read_write' },
      { name: 'labels', access: 'read' },
      { name: 'loss', access: 'read_write', overwrite: true },
      ...(p.lossScale ? [{ name: 'scaler', access: 'read' as const }] : []),
    ],
    types: { logits: 'array<f32>', labels: 'array<i32>', loss: 'array<f32>', scaler: 'array<f32>' },
    workgroups: g.workgroups,
    body: `var<workgroup> red : array<f32, ${WG}>;
var<workgroup> red2 : array<f32, ${WG}>;
var<workgroup> lab : array<u32, ${K}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let flat = ${g.flat};
  let r = min(flat, ${R - 1}u);
  let base = r * ${V}u;
  var mx = -3.0e38;
  for (var v = lid; v < ${V}u; v = v + ${WG}u) { mx = max(mx, logits[base + v]); }
  red[lid] = mx;${tree('red', (a, b) => `max(${a}, ${b})`)}
  let m = red[0];
  workgroupBarrier();
  var s = 0.0;
  var sl = 0.0;
  for (var v = lid; v < ${V}u; v = v + ${WG}u) { let l = logits[base + v]; s = s + exp(l - m); sl = sl + l; }
  red[lid] = s;
  red2[lid] = sl;${tree('red', (a, b) => `${a} + ${b}`)}
  let sumExp = red[0];
  let lse = m + log(sumExp);
  for (var w = ${WG / 2}u; w > 0u; w = w >> 1u) {
    if (lid < w) { red2[lid] = red2[lid] + red2[lid + w]; }
    workgroupBarrier();
  }
  if (lid < ${K}u) { lab[lid] = u32(labels[r * ${K}u + lid]); }
  workgroupBarrier();
  // the label logits are read before any invocation overwrites the row
  if (lid == 0u) {
    var h = 0.0;
    for (var k = 0u; k < ${K}u; k = k + 1u) { h = h + (lse - logits[base + lab[k]]); }
    let l = ${f32lit(1 - eps)} * (h / ${f32lit(K)})${eps ? ` + ${f32lit(eps)} * (lse - red2[0] / ${f32lit(V)})` : ''};
    if (flat < ${R}u) { loss[r] = l; }
  }
  workgroupBarrier();
  if (flat < ${R}u) {
    for (var v = lid; v < ${V}u; v = v + ${WG}u) {
      var cnt = 0.0;
      for (var k = 0u; k < ${K}u; k = k + 1u) { cnt = cnt + select(0.0, 1.0, lab[k] == v); }
      let pv = exp(logits[base + v] - m) / sumExp;
      logits[base + v] = ${p.lossScale ? 'scaler[0] * ' : ''}${f32lit(gs)} * (pv - ${hard} * cnt${eps ? ` - ${f32lit(eps / V)}` : ''});
    }
  }
}`,
    bytes: R * V * 12 + R * K * 4,
  });
}

/** Bindings: loss (read [rows]), out (out [1]): out[0] = scale · Σ loss. */
export function lossSum(p: { rows: number; scale?: number }): KernelSpec {
  const R = dim('lossSum rows', p.rows);
  const sc = p.scale ?? 1;
  return makeKernel({
    label: `lossSum ${R}`,
    bindings: [
      { name: 'loss', access: 'read' },
      { name: 'out', access: 'read_write' },
    ],
    types: { loss: 'array<f32>', out: 'array<f32>' },
    workgroups: [1, 1, 1],
    body: `var<workgroup> red : array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid : u32) {
  var s = 0.0;
  for (var i = lid; i < ${R}u; i = i + ${WG}u) { s = s + loss[i]; }
  red[lid] = s;${tree('red', (a, b) => `${a} + ${b}`)}
  if (lid == 0u) { out[0] = ${sc !== 1 ? `${f32lit(sc)} * ` : ''}red[0]; }
}`,
  });
}
