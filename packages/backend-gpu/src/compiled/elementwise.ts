/**
 * Elementwise helpers over n contiguous f32 elements of bound ranges (one element per invocation,
 * 256 per workgroup; the grid folds into y past 65535 workgroups):
 *   fill:  out[i] = value                 (out)
 *   copy:  out[i] = x[i]                  (x, out)
 *   add:   out[i] = a[i] + b[i]           (a, b, out)      residual adds
 *   accumulate: out[i] = out[i] + x[i]    (x, out)         gradient accumulation
 *   scale: out[i] = alpha · x[i]          (x, out)
 */
import { dim, f32lit, grid, makeKernel, type BindingSpec, type KernelSpec } from './kernel.js';

function elementwise(label: string, n: number, bindings: BindingSpec[], expr: string): KernelSpec {
  const N = dim(`${label} n`, n);
  const g = grid(Math.ceil(N / 256));
  return makeKernel({
    label: `${label} ${N}`,
    bindings,
    types: Object.fromEntries(bindings.map((b) => [b.name, 'array<f32>'])),
    workgroups: g.workgroups,
    body: `@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let i = ${g.flat} * 256u + lid;
  if (i < ${N}u) { out[i] = ${expr}; }
}`,
    bytes: N * 4 * bindings.length,
  });
}

export const fill = (p: { n: number; value?: number }) =>
  elementwise(`fill ${p.value ?? 0}`, p.n, [{ name: 'out', access: 'read_write', overwrite: true }], f32lit(p.value ?? 0));

export const copy = (p: { n: number }) =>
  elementwise('copy', p.n, [{ name: 'x', access: 'read' }, { name: 'out', access: 'read_write', overwrite: true }], 'x[i]');

export const add = (p: { n: number }) =>
  elementwise(
    'add',
    p.n,
    [{ name: 'a', access: 'read' }, { name: 'b', access: 'read' }, { name: 'out', access: 'read_write', overwrite: true }],
    'a[i] + b[i]',
  );

export const accumulate = (p: { n: number }) =>
  elementwise('accumulate', p.n, [{ name: 'x', access: 'read' }, { name: 'out', access: 'read_write' }], 'out[i] + x[i]');

export const scale = (p: { n: number; alpha: number }) =>
  elementwise(`scale ${p.alpha}`, p.n, [{ name: 'x', access: 'read' }, { name: 'out', access: 'read_write', overwrite: true }], `${f32lit(p.alpha)} * x[i]`);
