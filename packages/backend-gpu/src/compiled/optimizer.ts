/**
 * The optimizer step over flat buffers (parameters, gradients and AdamW moments each in one f32
 * buffer, every parameter at a 64-float = 256-byte aligned offset), matching
 * packages/trainer/src/optim.ts and @patchflow/tensor's adamwUpdate exactly:
 *
 * gradNorm (two deterministic stages over the flat gradient buffer, padding included, which must be 0):
 *   norm = √(Σ g²),  scale = min(1, gradClip / (norm + 1e-6)) when gradClip > 0, else 1
 *   out = [norm, scale]
 *
 * adamw (one dispatch over n elements):
 *   g' = g · scale                      (scale = clip[1], read on the GPU: no host sync)
 *   m' = m·β1 + g'·(1 − β1)
 *   v' = v·β2 + g'²·(1 − β2)
 *   w' = w·decay − (m' / (√(v'/bc2) + eps)) · stepSize
 * with decay = 1 − lr·weightDecay where the element's decay bit is set, else 1; stepSize = lr / bc1,
 * bc1 = 1 − β1^t, bc2 = 1 − β2^t from a 16-byte uniform written once per step (adamwUniform).
 * Decay bits: one bit per 64-element granule (no granule straddles two parameters thanks to the
 * alignment), built once by decayBits(). Optional mask (0/1 f32 per element): where it is 0, w', m'
 * and v' are set to +0, so pruned weights and their moments stay exactly zero. A non-finite norm
 * (inf or NaN: the step diverged) skips the update, so the weights stay those of the last good step.
 */
import { cdiv, dim, f32lit, grid, makeKernel, type BindingSpec, type KernelSpec } from './kernel.js';

/** Elements per decay granule (256 bytes of f32: the parameter alignment). */
export const DECAY_GRANULE = 64;

/**
 * The decay bitmap of a flat buffer of n elements: bit (i / 64) set when element i decays. `ranges`
 * are [start, end) element ranges of the decayed parameters; each start must be 64-aligned.
 */
export function decayBits(n: number, ranges: [number, number][]): Uint32Array {
  const granules = cdiv(n, DECAY_GRANULE);
  const bits = new Uint32Array(Math.max(1, cdiv(granules, 32)));
  for (const [s, e] of ranges) {
    if (s % DECAY_GRANULE) throw new Error(`decayBits: range start ${s} is not ${DECAY_GRANULE}-aligned`);
    if (e > n || s > e) throw new Error(`decayBits: range [${s}, ${e}) outside [0, ${n})`);
    for (let gi = s / DECAY_GRANULE; gi < cdiv(e, DECAY_GRANULE); gi++) bits[gi >>> 5]! |= 1 << (gi & 31);
  }
  return bits;
}

export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** The per-step uniform of adamw: [stepSize, bc2, decay, 0] for learning rate lr at update t (1-based). */
export function adamwUniform(c: AdamWConfig, lr: number, t: number): Float32Array {
  const bc1 = 1 - Math.pow(c.beta1, t);
  const bc2 = 1 - Math.pow(c.beta2, t);
  return new Float32Array([lr / bc1, bc2, c.weightDecay > 0 ? 1 - lr * c.weightDecay : 1, 0]);
}

export interface AdamWParams extends AdamWConfig {
  /** Elements updated (from the start of each bound range). */
  n: number;
  /** Bind a 0/1 mask (f32 [n]) that keeps pruned weights and their moments at zero. */
  masked?: boolean;
  /** Element offset of the bound range inside the flat buffer the decay bits describe (64-aligned). */
  decayOffset?: number;
}

/**
 * Bindings: w (rw), g (read), m (rw), v (rw), decayBits (read u32), clip (read: [norm, scale]),
 * step (uniform: adamwUniform), [mask (read f32)].
 */
export function adamw(p: AdamWParams): KernelSpec {
  const N = dim('adamw n', p.n);
  const off = p.decayOffset ?? 0;
  if (off % DECAY_GRANULE) throw new Error(`adamw: decayOffset ${off} is not ${DECAY_GRANULE}-aligned`);
  const g = grid(cdiv(N, 256));
  const bindings: BindingSpec[] = [
    { name: 'w', access: 'read_write' },
    { name: 'g', access: 'read' },
    { name: 'm', access: 'read_write' },
    { name: 'v', access: 'read_write' },
    { name: 'decay', access: 'read' },
    { name: 'clip', access: 'read' },
    { name: 'step', access: 'uniform' },
  ];
  if (p.masked) bindings.push({ name: 'mask', access: 'read' });
  const b1 = f32lit(p.beta1);
  const b2 = f32lit(p.beta2);
  // masked: a 0 in the mask selects +0.0 (not w·0, which is −0 for negative w and NaN for NaN)
  const keep = (e: string) => (p.masked ? `select(0.0, ${e}, mask[i] != 0.0)` : e);
  return makeKernel({
    label: `adamw ${N}${p.masked ? ' masked' : ''}`,
    bindings,
    types: {
      w: 'array<f32>',
      g: 'array<f32>',
      m: 'array<f32>',
      v: 'array<f32>',
      decay: 'array<u32>',
      clip: 'array<f32>',
      step: 'Step',
      mask: 'array<f32>',
    },
    workgroups: g.workgroups,
    body: `struct Step { stepSize : f32, bc2 : f32, decay : f32, pad : f32 }
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let i = ${g.flat} * 256u + lid;
  if (i >= ${N}u) { return; }
  // a non-finite gradient norm (a diverged step) leaves weights and moments as they were
  if ((bitcast<u32>(clip[0]) & 0x7f800000u) == 0x7f800000u) { return; }
  let gs = g[i] * clip[1];
  let m1 = ${keep(`m[i] * ${b1} + gs * ${f32lit(1 - p.beta1)}`)};
  let v1 = ${keep(`v[i] * ${b2} + (gs * gs) * ${f32lit(1 - p.beta2)}`)};
  let gi = (i + ${off}u) / ${DECAY_GRANULE}u;
  let decays = ((decay[gi / 32u] >> (gi % 32u)) & 1u) != 0u;
  let w0 = select(w[i], w[i] * step.decay, decays);
  let denom = sqrt(v1 / step.bc2) + ${f32lit(p.eps)};
  w[i] = ${keep('w0 - (m1 / denom) * step.stepSize')};
  m[i] = m1;
  v[i] = v1;
}`,
    bytes: N * 4 * (7 + (p.masked ? 1 : 0)),
  });
}

export interface GradNormParams {
  /** Elements of the flat gradient buffer. */
  n: number;
  /** Clip threshold (optim.ts gradClip); 0 disables clipping (scale 1). */
  gradClip: number;
  /** Elements per stage-1 workgroup (a multiple of 256; default 16384). */
  chunk?: number;
  /**
   * Dynamic loss scaling: the gradients are scaled by the loss scale scaler[0]; the reduce stage binds
   * `scaler` (read_write f32 [4], lossScaleState) after `out`, reports the unscaled norm, folds 1/scale
   * into out[1] (so adamw unscales as it clips) and sets scaler[3] = 1 when the scaled gradients hold
   * an inf or NaN (out[0] is then non-finite and adamw skips the step), else 0.
   */
  lossScale?: boolean;
}

/**
 * Bindings: partial: (g, partial); reduce: (partial, out [norm, scale]). `scratchFloats` is the size
 * of the partial buffer. Both stages sum in a fixed order (per-invocation strided sums, then a
 * shared-memory tree), so the result is bitwise reproducible.
 */
export function gradNorm(p: GradNormParams): { partial: KernelSpec; reduce: KernelSpec; scratchFloats: number } {
  const N = dim('gradNorm n', p.n);
  const chunk = dim('gradNorm chunk', p.chunk ?? 16384);
  if (chunk % 256) throw new Error('gradNorm: chunk must be a multiple of 256');
  const chunks = cdiv(N, chunk);
  const g = grid(chunks);
  const tree = (name: string) => `
  ${name}[lid] = s;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w = w >> 1u) {
    if (lid < w) { ${name}[lid] = ${name}[lid] + ${name}[lid + w]; }
    workgroupBarrier();
  }`;
  const partial = makeKernel({
    label: `gradNorm partial ${N}`,
    bindings: [
      { name: 'g', access: 'read' },
      { name: 'partial', access: 'read_write', overwrite: true },
    ],
    types: { g: 'array<f32>', partial: 'array<f32>' },
    workgroups: g.workgroups,
    body: `var<workgroup> red : array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let c = ${g.flat};
  var s = 0.0;
  if (c < ${chunks}u) {
    let end = min((c + 1u) * ${chunk}u, ${N}u);
    for (var i = c * ${chunk}u + lid; i < end; i = i + 256u) { let x = g[i]; s = s + x * x; }
  }${tree('red')}
  if (lid == 0u && c < ${chunks}u) { partial[c] = red[0]; }
}`,
    bytes: N * 4,
  });
  const clip = p.gradClip > 0 ? `min(1.0, ${f32lit(p.gradClip)} / (norm + 1e-6))` : '1.0';
  const finish = p.lossScale
    ? `let sum = red[0];
    let overflow = (bitcast<u32>(sum) & 0x7f800000u) == 0x7f800000u;
    let inv = 1.0 / scaler[0];
    let norm = sqrt(sum) * inv; // inf or NaN on overflow: adamw then skips the step
    out[0] = norm;
    out[1] = ${clip} * inv;
    scaler[3] = select(0.0, 1.0, overflow);`
    : `let norm = sqrt(red[0]);
    out[0] = norm;
    out[1] = ${clip};`;
  const reduce = makeKernel({
    label: `gradNorm reduce ${chunks}${p.lossScale ? ' ÷lossScale' : ''}`,
    bindings: [
      { name: 'partial', access: 'read' },
      { name: 'out', access: 'read_write', overwrite: true },
      ...(p.lossScale ? [{ name: 'scaler', access: 'read_write' as const }] : []),
    ],
    types: { partial: 'array<f32>', out: 'array<f32>', scaler: 'array<f32>' },
    workgroups: [1, 1, 1],
    body: `var<workgroup> red : array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid : u32) {
  var s = 0.0;
  for (var i = lid; i < ${chunks}u; i = i + 256u) { s = s + partial[i]; }${tree('red')}
  if (lid == 0u) {
    ${finish}
  }
}`,
  });
  return { partial, reduce, scratchFloats: chunks };
}
