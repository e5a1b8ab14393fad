/**
 * LayerNorm over the last axis (as @patchflow/tensor ops.ts: tf.moments, then rsqrt(var + eps)):
 *   mean = Σ x / C,  var = Σ (x − mean)² / C,  rstd = 1 / √(var + eps)   (eps default 1e-5)
 *   y = (x − mean) · rstd · γ + β
 * Backward, with x̂ = (x − mean)·rstd and g = dy·γ:
 *   dx = rstd · (g − mean_c(g) − x̂ · mean_c(g·x̂))          (+ dx's previous value: accumulate)
 *   dγ = Σ_rows dy·x̂,  dβ = Σ_rows dy                      (deterministic: per-chunk partials, then
 *                                                            a reduce over chunks in order)
 * One workgroup of 128 invocations per row for the row kernels (strided columns, tree reductions in
 * workgroup memory, so results do not depend on scheduling).
 */
import { cdiv, dim, f32lit, grid, makeKernel, type KernelSpec } from './kernel.js';

export interface LayerNormParams {
  rows: number;
  cols: number;
  eps?: number;
}

const WG = 128;
const treeSum = (arr: string, v: string) => `
  ${arr}[lid] = ${v};
  workgroupBarrier();
  for (var w = ${WG / 2}u; w > 0u; w = w >> 1u) {
    if (lid < w) { ${arr}[lid] = ${arr}[lid] + ${arr}[lid + w]; }
    workgroupBarrier();
  }`;

/** Bindings: x (read [rows, cols]), gamma, beta (read [cols]), y (out [rows, cols]), mean, rstd (out [rows]). */
export function layerNormForward(p: LayerNormParams): KernelSpec {
  const R = dim('layerNorm rows', p.rows);
  const C = dim('layerNorm cols', p.cols);
  const g = grid(R);
  return makeKernel({
    label: `layerNorm ${R}x${C}`,
    bindings: [
      { name: 'x', access: 'read' },
      { name: 'gamma', access: 'read' },
      { name: 'beta', access: 'read' },
      { name: 'y', access: 'read_write', overwrite: true },
      { name: 'mean', access: 'read_write', overwrite: true },
      { name: 'rstd', access: 'read_write', overwrite: true },
    ],
    types: { x: 'array<f32>', gamma: 'array<f32>', beta: 'array<f32>', y: 'array<f32>', mean: 'array<f32>', rstd: 'array<f32>' },
    workgroups: g.workgroups,
    body: `var<workgroup> red : array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let r = min(${g.flat}, ${R - 1}u);
  let base = r * ${C}u;
  var s = 0.0;
  for (var c = lid; c < ${C}u; c = c + ${WG}u) { s = s + x[base + c]; }${treeSum('red', 's')}
  let mu = red[0] / ${f32lit(C)};
  workgroupBarrier();
  var q = 0.0;
  for (var c = lid; c < ${C}u; c = c + ${WG}u) { let d = x[base + c] - mu; q = q + d * d; }${treeSum('red', 'q')}
  let rs = inverseSqrt(red[0] / ${f32lit(C)} + ${f32lit(p.eps ?? 1e-5)});
  for (var c = lid; c < ${C}u; c = c + ${WG}u) { y[base + c] = (x[base + c] - mu) * rs * gamma[c] + beta[c]; }
  if (lid == 0u) { mean[r] = mu; rstd[r] = rs; }
}`,
    bytes: R * C * 8 + R * 8,
  });
}

export interface LayerNormBackwardParams {
  rows: number;
  cols: number;
  /** dx += LN-backward (dx holding the residual stream's gradient) instead of dx = LN-backward. */
  accumulate?: boolean;
  /** dγ, dβ += instead of = (gradient accumulation). */
  accumulateParams?: boolean;
  /** Rows per partial-sum chunk of dγ, dβ (default 256). */
  rowsPerChunk?: number;
}

/**
 * Three kernels, run in order (any order between dx and partial):
 *   dx:      (dy, x, gamma, mean, rstd, dx)
 *   partial: (dy, x, mean, rstd, partial)      partial = [chunks, 2, cols] (dγ then dβ sums)
 *   reduce:  (partial, dgamma, dbeta)
 */
export function layerNormBackward(p: LayerNormBackwardParams): { dx: KernelSpec; partial: KernelSpec; reduce: KernelSpec; scratchFloats: number } {
  const R = dim('layerNorm rows', p.rows);
  const C = dim('layerNorm cols', p.cols);
  const RC = dim('layerNorm rowsPerChunk', p.rowsPerChunk ?? 256);
  const chunks = cdiv(R, RC);
  const g = grid(R);
  const dx = makeKernel({
    label: `layerNorm backward dx ${R}x${C}${p.accumulate ? ' +=' : ''}`,
    bindings: [
      { name: 'dy', access: 'read' },
      { name: 'x', access: 'read' },
      { name: 'gamma', access: 'read' },
      { name: 'mean', access: 'read' },
      { name: 'rstd', access: 'read' },
      { name: 'dx', access: 'read_write', overwrite: !p.accumulate },
    ],
    types: { dy: 'array<f32>', x: 'array<f32>', gamma: 'array<f32>', mean: 'array<f32>', rstd: 'array<f32>', dx: 'array<f32>' },
    workgroups: g.workgroups,
    body: `var<workgroup> red : array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let r = min(${g.flat}, ${R - 1}u);
  let base = r * ${C}u;
  let mu = mean[r];
  let rs = rstd[r];
  var sg = 0.0;
  var sgx = 0.0;
  for (var c = lid; c < ${C}u; c = c + ${WG}u) {
    let gv = dy[base + c] * gamma[c];
    sg = sg + gv;
    sgx = sgx + gv * (x[base + c] - mu) * rs;
  }${treeSum('red', 'sg')}
  let mg = red[0] / ${f32lit(C)};
  workgroupBarrier();${treeSum('red', 'sgx')}
  let mgx = red[0] / ${f32lit(C)};
  for (var c = lid; c < ${C}u; c = c + ${WG}u) {
    let xh = (x[base + c] - mu) * rs;
    let v = rs * (dy[base + c] * gamma[c] - mg - xh * mgx);
    dx[base + c] = ${p.accumulate ? 'dx[base + c] + v' : 'v'};
  }
}`,
    bytes: R * C * 12,
  });
  const partial = makeKernel({
    label: `layerNorm backward partial ${R}x${C}`,
    bindings: [
      { name: 'dy', access: 'read' },
      { name: 'x', access: 'read' },
      { name: 'mean', access: 'read' },
      { name: 'rstd', access: 'read' },
      { name: 'partial', access: 'read_write', overwrite: true },
    ],
    types: { dy: 'array<f32>', x: 'array<f32>', mean: 'array<f32>', rstd: 'array<f32>', partial: 'array<f32>' },
    workgroups: [cdiv(C, 64), chunks, 1],
    body: `var<workgroup> lg : array<f32, 256>;
var<workgroup> lb : array<f32, 256>;
@compute @workgroup_size(64, 4)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_id) li : vec3<u32>) {
  let c = wid.x * 64u + li.x;
  let r0 = wid.y * ${RC}u;
  var sg = 0.0;
  var sb = 0.0;
  if (c < ${C}u) {
    for (var r = r0 + li.y; r < min(r0 + ${RC}u, ${R}u); r = r + 4u) {
      let d = dy[r * ${C}u + c];
      sg = sg + d * (x[r * ${C}u + c] - mean[r]) * rstd[r];
      sb = sb + d;
    }
  }
  lg[li.y * 64u + li.x] = sg;
  lb[li.y * 64u + li.x] = sb;
  workgroupBarrier();
  if (li.y == 0u && c < ${C}u) {
    partial[wid.y * ${2 * C}u + c] = ((lg[li.x] + lg[64u + li.x]) + lg[128u + li.x]) + lg[192u + li.x];
    partial[wid.y * ${2 * C}u + ${C}u + c] = ((lb[li.x] + lb[64u + li.x]) + lb[128u + li.x]) + lb[192u + li.x];
  }
}`,
    bytes: R * C * 8,
  });
  const acc = !!p.accumulateParams;
  const reduce = makeKernel({
    label: `layerNorm backward reduce ${chunks}x${C}${acc ? ' +=' : ''}`,
    bindings: [
      { name: 'partial', access: 'read' },
      { name: 'dgamma', access: 'read_write', overwrite: !acc },
      { name: 'dbeta', access: 'read_write', overwrite: !acc },
    ],
    types: { partial: 'array<f32>', dgamma: 'array<f32>', dbeta: 'array<f32>' },
    workgroups: [cdiv(C, 64), 1, 1],
    body: `@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid : vec3<u32>) {
  let c = gid.x;
  if (c >= ${C}u) { return; }
  var sg = 0.0;
  var sb = 0.0;
  for (var k = 0u; k < ${chunks}u; k = k + 1u) {
    sg = sg + partial[k * ${2 * C}u + c];
    sb = sb + partial[k * ${2 * C}u + ${C}u + c];
  }
  dgamma[c] = ${acc ? 'dgamma[c] + sg' : 'sg'};
  dbeta[c] = ${acc ? 'dbeta[c] + sb' : 'sb'};
}`,
  });
  return { dx, partial, reduce, scratchFloats: chunks * 2 * C };
}
