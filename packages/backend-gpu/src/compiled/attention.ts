/**
 * Causal multi-head attention straight out of the fused qkv projection, as model.ts computes it
 * (tf.split(qkv, 3, 1) then heads [B, T, H, hd] -> [B, H, T, hd]; @patchflow/tensor causalAttention):
 *   qkv: [B·T, 3d] with q of head h at columns h·hd, k at d + h·hd, v at 2d + h·hd (d = H·hd)
 *   S = scale · q kᵀ (scale = 1/√hd), causal (key ≤ query), P = softmax(S), out = P v
 *   out: [B·T, d] with heads merged (head h at columns h·hd); lse [B·H·T] = log Σ_j exp(S_ij)
 * Backward (dO = d out):
 *   delta_i = Σ_d dO_i,d · O_i,d;  P_ij = exp(S_ij − lse_i);  dP_ij = dO_i · v_j
 *   dS_ij = P_ij (dP_ij − delta_i);  dq_i = scale Σ_j dS_ij k_j;  dk_j = scale Σ_i dS_ij q_i;
 *   dv_j = Σ_i P_ij dO_i   -> written into dqkv [B·T, 3d] in qkv's layout.
 * Flash-style: the forward keeps one query row per invocation (64 per workgroup) with its output in
 * registers and an online softmax over key/value tiles staged in workgroup memory. The backward
 * recomputes P from lse: one kernel owns key rows (dk, dv, looping over query tiles), one owns query
 * rows (dq, looping over key tiles), so every gradient is a plain sum in a fixed order (no atomics).
 *
 * Rotary positions (model.ts rotary, rotate-half form, on q and k of every head), either fused into
 * the attention kernels (AttentionParams.rotary) or as a separate pass (rotary()):
 *   x'_i = x_i cos θ_{t,i} − x_{i+hd/2} sin θ_{t,i},  x'_{i+hd/2} = x_{i+hd/2} cos θ_{t,i} + x_i sin θ_{t,i}
 *   θ_{t,i} = t / 10000^(2i/hd); v is copied. The backward is the transposed rotation (sin negated).
 *   The cos/sin table comes from rotaryTable() (float64 on the host, as model.ts, rounded to f32).
 */
import { cdiv, dim, f32lit, grid, makeKernel, type KernelSpec } from './kernel.js';

export interface AttentionParams {
  batch: number;
  /** Sequence length T. */
  t: number;
  heads: number;
  headDim: number;
  /** Default 1/√headDim. */
  scale?: number;
  /**
   * Fused rotary positions: q and k are rotated (as rotary() does) as they are read, and the backward
   * maps d(rotated q, k) back through the transposed rotation, so qkv and dqkv stay unrotated. Adds a
   * binding `table` (rotaryTable(t, headDim)) after the read inputs.
   */
  rotary?: boolean;
}

/** Query (or key) rows owned by one workgroup: one per invocation. */
const ROWS = 64;

function shape(p: AttentionParams) {
  const B = dim('attention batch', p.batch);
  const T = dim('attention t', p.t);
  const H = dim('attention heads', p.heads);
  const HD = dim('attention headDim', p.headDim);
  const D = H * HD;
  // K/V (or Q/dO) tile rows staged in workgroup memory: two tiles of TILE·hd f32 plus 2·TILE f32 fit
  // WebGPU's default 16 KiB. TILE ≤ 16 also keeps lavapipe's LLVM from unrolling itself into minutes
  // of compile time (TILE 32 at hd 32 took over two minutes there; so did vec4 rows at hd 64).
  let TILE = 16;
  while (TILE > 1 && TILE * (2 * HD + 2) * 4 > 16384) TILE /= 2;
  const rope = !!p.rotary;
  if (rope && HD % 2) throw new Error(`attention: rotary needs an even headDim, got ${HD}`);
  const half = HD / 2;
  // rq(base, d, t): element d of the q or k head row starting at qkv[base], rotated for position t.
  // unrot(v, partner, d, t): element d of Rᵀ·x given x[d] = v and x[partner(d)] (the backward).
  const ropeFns = rope
    ? `fn rq(base : u32, d : u32, t : u32) -> f32 {
  let i = d % ${half}u;
  let c = table[t * ${half}u + i];
  let s = table[${T * half}u + t * ${half}u + i];
  let partner = qkv[base + (d + ${half}u) % ${HD}u];
  return qkv[base + d] * c + select(1.0, -1.0, d < ${half}u) * partner * s;
}
fn unrot(v : f32, partner : f32, d : u32, t : u32) -> f32 {
  let i = d % ${half}u;
  return v * table[t * ${half}u + i] + select(-1.0, 1.0, d < ${half}u) * partner * table[${T * half}u + t * ${half}u + i];
}`
    : '';
  // reads element d of the q or k head row at qkv[base] for position t (rotated when fused)
  const ld = (base: string, d: string, t: string) => (rope ? `rq(${base}, ${d}, ${t})` : `qkv[${base} + ${d}]`);
  return { B, T, H, HD, D, TILE, scale: p.scale ?? 1 / Math.sqrt(HD), rope, half, ropeFns, ld };
}

const ropeLabel = (p: AttentionParams) => (p.rotary ? ' +rotary' : '');

/** Bindings: qkv (read [B·T, 3d]), [table (read, rotary only)], out (out [B·T, d]), lse (out [B·H·T]). */
export function attentionForward(p: AttentionParams): KernelSpec {
  const { B, T, H, HD, D, TILE, scale, rope, ropeFns, ld } = shape(p);
  const nQB = cdiv(T, ROWS);
  return makeKernel({
    label: `attention forward B=${B} T=${T} H=${H} hd=${HD}${ropeLabel(p)}`,
    bindings: [
      { name: 'qkv', access: 'read' },
      ...(rope ? [{ name: 'table', access: 'read' as const }] : []),
      { name: 'out', access: 'read_write', overwrite: true },
      { name: 'lse', access: 'read_write', overwrite: true },
    ],
    types: { qkv: 'array<f32>', table: 'array<f32>', out: 'array<f32>', lse: 'array<f32>' },
    workgroups: [nQB, B * H, 1],
    body: `${ropeFns}
var<workgroup> Ks : array<f32, ${TILE * HD}>;
var<workgroup> Vs : array<f32, ${TILE * HD}>;
@compute @workgroup_size(${ROWS})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let bh = wid.y;
  let b = bh / ${H}u;
  let h = bh % ${H}u;
  let i = wid.x * ${ROWS}u + lid;
  let qrow = (b * ${T}u + min(i, ${T - 1}u)) * ${3 * D}u + h * ${HD}u;
  var q : array<f32, ${HD}>;
  var o : array<f32, ${HD}>;
  for (var d = 0u; d < ${HD}u; d = d + 1u) { q[d] = ${ld('qrow', 'd', `min(i, ${T - 1}u)`)}; o[d] = 0.0; }
  var m = -3.0e38;
  var l = 0.0;
  let kEnd = min(${T}u, (wid.x + 1u) * ${ROWS}u);
  let nTiles = (kEnd + ${TILE - 1}u) / ${TILE}u;
  for (var jt = 0u; jt < nTiles; jt = jt + 1u) {
    for (var e = lid; e < ${TILE * HD}u; e = e + ${ROWS}u) {
      let kr = min(jt * ${TILE}u + e / ${HD}u, ${T - 1}u);
      let src = (b * ${T}u + kr) * ${3 * D}u + h * ${HD}u;
      Ks[e] = ${ld(`src + ${D}u`, `e % ${HD}u`, 'kr')};
      Vs[e] = qkv[src + ${2 * D}u + e % ${HD}u];
    }
    workgroupBarrier();
    var s : array<f32, ${TILE}>;
    var mt = m;
    for (var c = 0u; c < ${TILE}u; c = c + 1u) {
      var dot = 0.0;
      for (var d = 0u; d < ${HD}u; d = d + 1u) { dot = dot + q[d] * Ks[c * ${HD}u + d]; }
      let sc = select(-3.0e38, dot * ${f32lit(scale)}, jt * ${TILE}u + c <= i);
      s[c] = sc;
      mt = max(mt, sc);
    }
    let corr = exp(m - mt);
    l = l * corr;
    for (var d = 0u; d < ${HD}u; d = d + 1u) { o[d] = o[d] * corr; }
    for (var c = 0u; c < ${TILE}u; c = c + 1u) {
      let pc = exp(s[c] - mt);
      l = l + pc;
      for (var d = 0u; d < ${HD}u; d = d + 1u) { o[d] = o[d] + pc * Vs[c * ${HD}u + d]; }
    }
    m = mt;
    workgroupBarrier();
  }
  if (i < ${T}u) {
    let orow = (b * ${T}u + i) * ${D}u + h * ${HD}u;
    let inv = 1.0 / l;
    for (var d = 0u; d < ${HD}u; d = d + 1u) { out[orow + d] = o[d] * inv; }
    lse[bh * ${T}u + i] = m + log(l);
  }
}`,
    flops: 2 * 2 * B * H * HD * ((T * (T + 1)) / 2),
    bytes: B * T * D * 4 * 4,
  });
}

/**
 * The backward as three kernels, run in order:
 *   delta: (out, dout, delta [B·H·T])
 *   dkdv:  (qkv, dout, lse, delta, [table], dqkv)   writes the k and v columns of dqkv
 *   dq:    (qkv, dout, lse, delta, [table], dqkv)   writes the q columns of dqkv
 * dqkv: [B·T, 3d]; dkdv and dq together write every element of it.
 */
export function attentionBackward(p: AttentionParams): { delta: KernelSpec; dkdv: KernelSpec; dq: KernelSpec } {
  const { B, T, H, HD, D, TILE, scale, rope, half, ropeFns, ld } = shape(p);
  const nB = cdiv(T, ROWS);
  const sc = f32lit(scale);
  const g = grid(cdiv(B * T * H, 256));
  const delta = makeKernel({
    label: `attention backward delta B=${B} T=${T} H=${H} hd=${HD}`,
    bindings: [
      { name: 'out', access: 'read' },
      { name: 'dout', access: 'read' },
      { name: 'delta', access: 'read_write', overwrite: true },
    ],
    types: { out: 'array<f32>', dout: 'array<f32>', delta: 'array<f32>' },
    workgroups: g.workgroups,
    body: `@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let idx = ${g.flat} * 256u + lid;   // (b, t, h)
  if (idx >= ${B * T * H}u) { return; }
  let h = idx % ${H}u;
  let bt = idx / ${H}u;
  let b = bt / ${T}u;
  let t = bt % ${T}u;
  let base = bt * ${D}u + h * ${HD}u;
  var s = 0.0;
  for (var d = 0u; d < ${HD}u; d = d + 1u) { s = s + dout[base + d] * out[base + d]; }
  delta[(b * ${H}u + h) * ${T}u + t] = s;
}`,
  });
  const bindings = [
    { name: 'qkv', access: 'read' as const },
    { name: 'dout', access: 'read' as const },
    { name: 'lse', access: 'read' as const },
    { name: 'delta', access: 'read' as const },
    ...(rope ? [{ name: 'table', access: 'read' as const }] : []),
    { name: 'dqkv', access: 'read_write' as const },
  ];
  const types = { qkv: 'array<f32>', dout: 'array<f32>', lse: 'array<f32>', delta: 'array<f32>', table: 'array<f32>', dqkv: 'array<f32>' };
  // writes gradient row g (private array, w.r.t. the rotated q or k when fused) at dqkv[base + d]
  const store = (g: string, base: string, t: string) =>
    rope
      ? `for (var d = 0u; d < ${HD}u; d = d + 1u) { dqkv[${base} + d] = unrot(${g}[d], ${g}[(d + ${half}u) % ${HD}u], d, ${t}); }`
      : `for (var d = 0u; d < ${HD}u; d = d + 1u) { dqkv[${base} + d] = ${g}[d]; }`;
  const dkdv = makeKernel({
    label: `attention backward dk dv B=${B} T=${T} H=${H} hd=${HD}${ropeLabel(p)}`,
    bindings,
    types,
    workgroups: [nB, B * H, 1],
    body: `${ropeFns}
var<workgroup> Qs : array<f32, ${TILE * HD}>;
var<workgroup> Os : array<f32, ${TILE * HD}>;
var<workgroup> Ls : array<f32, ${TILE}>;
var<workgroup> Ds : array<f32, ${TILE}>;
@compute @workgroup_size(${ROWS})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let bh = wid.y;
  let b = bh / ${H}u;
  let h = bh % ${H}u;
  let j = wid.x * ${ROWS}u + lid;
  let krow = (b * ${T}u + min(j, ${T - 1}u)) * ${3 * D}u + h * ${HD}u;
  var k : array<f32, ${HD}>;
  var v : array<f32, ${HD}>;
  var dk : array<f32, ${HD}>;
  var dv : array<f32, ${HD}>;
  let jc = min(j, ${T - 1}u);
  for (var d = 0u; d < ${HD}u; d = d + 1u) { k[d] = ${ld(`krow + ${D}u`, 'd', 'jc')}; v[d] = qkv[krow + ${2 * D}u + d]; dk[d] = 0.0; dv[d] = 0.0; }
  // query tiles from the one holding this block's first key to the end
  let first = (wid.x * ${ROWS}u) / ${TILE}u;
  for (var it = first; it < ${cdiv(T, TILE)}u; it = it + 1u) {
    for (var e = lid; e < ${TILE * HD}u; e = e + ${ROWS}u) {
      let qr = min(it * ${TILE}u + e / ${HD}u, ${T - 1}u);
      Qs[e] = ${ld(`(b * ${T}u + qr) * ${3 * D}u + h * ${HD}u`, `e % ${HD}u`, 'qr')};
      Os[e] = dout[(b * ${T}u + qr) * ${D}u + h * ${HD}u + e % ${HD}u];
    }
    for (var e = lid; e < ${TILE}u; e = e + ${ROWS}u) {
      let qr = min(it * ${TILE}u + e, ${T - 1}u);
      Ls[e] = lse[bh * ${T}u + qr];
      Ds[e] = delta[bh * ${T}u + qr];
    }
    workgroupBarrier();
    for (var c = 0u; c < ${TILE}u; c = c + 1u) {
      let i = it * ${TILE}u + c;
      if (i >= j && i < ${T}u) {
        var qk = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < ${HD}u; d = d + 1u) {
          qk = qk + Qs[c * ${HD}u + d] * k[d];
          dp = dp + Os[c * ${HD}u + d] * v[d];
        }
        let pr = exp(qk * ${sc} - Ls[c]);
        let ds = pr * (dp - Ds[c]) * ${sc};
        for (var d = 0u; d < ${HD}u; d = d + 1u) {
          dv[d] = dv[d] + pr * Os[c * ${HD}u + d];
          dk[d] = dk[d] + ds * Qs[c * ${HD}u + d];
        }
      }
    }
    workgroupBarrier();
  }
  if (j < ${T}u) {
    ${store('dk', `krow + ${D}u`, 'j')}
    for (var d = 0u; d < ${HD}u; d = d + 1u) { dqkv[krow + ${2 * D}u + d] = dv[d]; }
  }
}`,
    flops: 2 * 4 * B * H * HD * ((T * (T + 1)) / 2),
  });
  const dq = makeKernel({
    label: `attention backward dq B=${B} T=${T} H=${H} hd=${HD}${ropeLabel(p)}`,
    bindings,
    types,
    workgroups: [nB, B * H, 1],
    body: `${ropeFns}
var<workgroup> Ks : array<f32, ${TILE * HD}>;
var<workgroup> Vs : array<f32, ${TILE * HD}>;
@compute @workgroup_size(${ROWS})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let bh = wid.y;
  let b = bh / ${H}u;
  let h = bh % ${H}u;
  let i = wid.x * ${ROWS}u + lid;
  let ic = min(i, ${T - 1}u);
  let qrow = (b * ${T}u + ic) * ${3 * D}u + h * ${HD}u;
  let orow = (b * ${T}u + ic) * ${D}u + h * ${HD}u;
  var q : array<f32, ${HD}>;
  var go : array<f32, ${HD}>;
  var dq : array<f32, ${HD}>;
  for (var d = 0u; d < ${HD}u; d = d + 1u) { q[d] = ${ld('qrow', 'd', 'ic')}; go[d] = dout[orow + d]; dq[d] = 0.0; }
  let li = lse[bh * ${T}u + ic];
  let di = delta[bh * ${T}u + ic];
  let kEnd = min(${T}u, (wid.x + 1u) * ${ROWS}u);
  let nTiles = (kEnd + ${TILE - 1}u) / ${TILE}u;
  for (var jt = 0u; jt < nTiles; jt = jt + 1u) {
    for (var e = lid; e < ${TILE * HD}u; e = e + ${ROWS}u) {
      let kr = min(jt * ${TILE}u + e / ${HD}u, ${T - 1}u);
      let src = (b * ${T}u + kr) * ${3 * D}u + h * ${HD}u;
      Ks[e] = ${ld(`src + ${D}u`, `e % ${HD}u`, 'kr')};
      Vs[e] = qkv[src + ${2 * D}u + e % ${HD}u];
    }
    workgroupBarrier();
    for (var c = 0u; c < ${TILE}u; c = c + 1u) {
      if (jt * ${TILE}u + c <= i) {
        var qk = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < ${HD}u; d = d + 1u) {
          qk = qk + q[d] * Ks[c * ${HD}u + d];
          dp = dp + go[d] * Vs[c * ${HD}u + d];
        }
        let ds = exp(qk * ${sc} - li) * (dp - di) * ${sc};
        for (var d = 0u; d < ${HD}u; d = d + 1u) { dq[d] = dq[d] + ds * Ks[c * ${HD}u + d]; }
      }
    }
    workgroupBarrier();
  }
  if (i < ${T}u) {
    ${store('dq', 'qrow', 'i')}
  }
}`,
    flops: 2 * 3 * B * H * HD * ((T * (T + 1)) / 2),
  });
  return { delta, dkdv, dq };
}

/** cos then sin of θ_{t,i} = t / 10000^(2i/hd), as f32 [2, T, hd/2] (model.ts's values). */
export function rotaryTable(t: number, headDim: number): Float32Array {
  const half = headDim / 2;
  const out = new Float32Array(2 * t * half);
  for (let pos = 0; pos < t; pos++) {
    for (let i = 0; i < half; i++) {
      const ang = pos / Math.pow(10000, (2 * i) / headDim);
      out[pos * half + i] = Math.cos(ang);
      out[t * half + pos * half + i] = Math.sin(ang);
    }
  }
  return out;
}

export interface RotaryParams {
  batch: number;
  t: number;
  heads: number;
  headDim: number;
  /** The backward (transposed rotation): maps d(rotated qkv) to d(qkv). */
  backward?: boolean;
}

/**
 * Bindings: src (read [B·T, 3d]), table (read: rotaryTable(t, headDim)), dst (out [B·T, 3d]): q and k
 * of every head rotated, v copied.
 */
export function rotary(p: RotaryParams): KernelSpec {
  const B = dim('rotary batch', p.batch);
  const T = dim('rotary t', p.t);
  const H = dim('rotary heads', p.heads);
  const HD = dim('rotary headDim', p.headDim);
  if (HD % 2) throw new Error(`rotary: headDim must be even, got ${HD}`);
  const D = H * HD;
  const half = HD / 2;
  const n = B * T * D; // one invocation per row and r < d: rotates one q or k pair, copies v element r
  const g = grid(cdiv(n, 256));
  return makeKernel({
    label: `rotary ${p.backward ? 'backward' : 'forward'} B=${B} T=${T} H=${H} hd=${HD}`,
    bindings: [
      { name: 'src', access: 'read' },
      { name: 'table', access: 'read' },
      { name: 'dst', access: 'read_write', overwrite: true },
    ],
    types: { src: 'array<f32>', table: 'array<f32>', dst: 'array<f32>' },
    workgroups: g.workgroups,
    body: `@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let idx = ${g.flat} * 256u + lid;
  if (idx >= ${n}u) { return; }
  let row = idx / ${D}u;
  let r = idx % ${D}u;           // [0, d): (q or k part) × head × first-half column
  let part = r / ${D / 2}u;      // 0: q, 1: k
  let hc = r % ${D / 2}u;
  let h = hc / ${half}u;
  let i = hc % ${half}u;
  let t = row % ${T}u;
  let c = table[t * ${half}u + i];
  let s = ${p.backward ? '-' : ''}table[${T * half}u + t * ${half}u + i];
  let col = row * ${3 * D}u + part * ${D}u + h * ${HD}u + i;
  let x1 = src[col];
  let x2 = src[col + ${half}u];
  dst[col] = x1 * c - x2 * s;
  dst[col + ${half}u] = x2 * c + x1 * s;
  // v: invocation r of the row also copies v element r
  let vi = row * ${3 * D}u + ${2 * D}u + r;
  dst[vi] = src[vi];
}`,
  });
}
