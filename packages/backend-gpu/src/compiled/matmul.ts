/**
 * Dense matrix products with fused epilogues, and the column sum (bias gradient).
 *
 * matmul: for each batch z < batch,
 *   P = alpha · op(A_z) · op(B_z)                      op(X) = X or Xᵀ (transA / transB)
 *   v = P (+ bias[n]) (⊙ gelu'(F[m,n])) (+ R[m,n]) (+ C[m,n] when accumulating)
 *   C[m,n] = gelu(v) or v;  pre[m,n] = v  (gelu: 'both')
 * with A stored row-major [M,K] (transA: [K,M]), B [K,N] (transB: [N,K]), C, R, F, pre [M,N];
 * batch z starts at z·stride (elements) of each buffer (stride 0 broadcasts A or B). gelu is the
 * tanh approximation of @patchflow/tensor's ops.ts: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
 *
 * Kernel: one workgroup per BM×BN tile of C (x: column tiles, y: row tiles, z: batch), TM×TN outputs
 * per invocation held in registers as vec4s (the TM rows and TN columns are split into groups of 4
 * spread BM/(TM/4) and BN/(TN/4) apart, so shared-memory reads of a warp are contiguous vec4s).
 * K is walked BK at a time through workgroup memory, double-buffered: the next tile's global loads are
 * issued (into registers) before the current tile's FMAs and stored to the other buffer after them, so
 * there is one barrier per K tile. Global loads are vec4 where the operand's contiguous dimension is a
 * multiple of 4, scalar otherwise. Edge tiles clamp their row/column loads (garbage rows are computed
 * but never stored) and only the K tail tile (K % BK != 0) zero-fills out-of-range k; stores are guarded.
 * dtype 'f16' reads A and B as f16 (`enable f16;`, device feature 'shader-f16') and accumulates in f32.
 * Mixed precision (the f16 training step): `aType` / `bType` set each operand's storage type apart,
 * `roundF16` rounds f32 operands through f16 as they are loaded (so every product is of f16 values,
 * as on tensor cores, with f32 accumulation), and `offsetA` / `offsetB` start an operand that many
 * elements into its binding (an f16 weight copy bound whole). The same parameters drive the
 * subgroup-matrix kernel (matmul-sgmat.ts), with the same bindings and epilogues.
 *
 * matmulSplitK (weight gradients, C [M,N] (+)= Aᵀ·B with A [K,M], B [K,N] and K ≫ M, N): the K rows
 * are cut into `splits` contiguous chunks, each a batch of the same kernel writing its partial product
 * to scratch, then the partials are added in chunk order (deterministic) into C. This gives a skinny
 * product (e.g. 768×768 over K = 8192 rows) enough workgroups to fill a large GPU.
 *
 * colSum: out[n] (+)= Σ_m X[m, n] over X [M, N], deterministic: stage 1 sums fixed chunks of rows per
 * workgroup into partial[chunk, n] (fixed order within a chunk), stage 2 adds the chunks in order.
 */
import { cdiv, dim, f32lit, makeKernel, type BindingSpec, type KernelSpec } from './kernel.js';

export type MatmulDtype = 'f32' | 'f16';

/** Workgroup tile BM×BN, K step BK, TM×TN outputs per invocation ((BM/TM)·(BN/TN) invocations). */
export interface TileConfig {
  bm: number;
  bn: number;
  bk: number;
  tm: number;
  tn: number;
}

export interface MatmulParams {
  m: number;
  n: number;
  k: number;
  /** A is stored [K, M] (default [M, K]). */
  transA?: boolean;
  /** B is stored [N, K] (default [K, N]). */
  transB?: boolean;
  /** Independent products (dispatch z); default 1. */
  batch?: number;
  /** Elements between consecutive batches of A, B and C/R/F/pre (defaults: dense; 0 broadcasts A or B). */
  strideA?: number;
  strideB?: number;
  strideC?: number;
  /** Storage type of A and B (accumulation is always f32). */
  dtype?: MatmulDtype;
  /** Storage type of A alone (default dtype). */
  aType?: MatmulDtype;
  /** Storage type of B alone (default dtype). */
  bType?: MatmulDtype;
  /** Round f32 operands to f16 as they are loaded (f16 products, f32 accumulation). */
  roundF16?: boolean;
  /** Elements from the start of A's / B's binding to the operand (added to every batch's start). */
  offsetA?: number;
  offsetB?: number;
  /** Scale of the product (before bias). */
  alpha?: number;
  /** + bias[n] (f32 [N], shared by all batches). */
  bias?: boolean;
  /** 'act': C = gelu(v); 'both': also pre = v. */
  gelu?: 'none' | 'act' | 'both';
  /** v ⊙= gelu'(F) with F the pre-activation [M, N] (the MLP's backward through GELU). */
  geluBackward?: boolean;
  /** + R[m, n] (a separate read buffer). */
  residual?: boolean;
  /** C += result (gradient accumulation). */
  accumulate?: boolean;
  tile?: TileConfig;
}

/** The default tile for a shape: big tiles where they still give every SM of a large GPU work. */
export function defaultTile(m: number, n: number, batch = 1): TileConfig {
  const tiles = (bm: number, bn: number) => cdiv(m, bm) * cdiv(n, bn) * batch;
  if (tiles(128, 128) >= 132) return { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 };
  if (tiles(64, 64) >= 132) return { bm: 64, bn: 64, bk: 8, tm: 4, tn: 4 };
  return { bm: 32, bn: 32, bk: 8, tm: 4, tn: 4 };
}

/**
 * Tile configs worth autotuning over (see bench.ts). Some exceed WebGPU's default limits (16 KiB of
 * workgroup memory, 256 invocations) and need them raised at requestDevice; the benchmark skips
 * configs a device cannot run. Every one is tested for correctness (compiled-matmul.test.ts).
 */
export const TILE_CANDIDATES: TileConfig[] = [
  { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
  { bm: 128, bn: 128, bk: 16, tm: 8, tn: 8 },
  { bm: 128, bn: 128, bk: 16, tm: 8, tn: 4 },
  { bm: 128, bn: 256, bk: 8, tm: 8, tn: 8 },
  { bm: 64, bn: 256, bk: 8, tm: 8, tn: 8 },
  { bm: 128, bn: 64, bk: 8, tm: 8, tn: 4 },
  { bm: 128, bn: 64, bk: 16, tm: 8, tn: 8 },
  { bm: 64, bn: 128, bk: 8, tm: 4, tn: 8 },
  { bm: 64, bn: 64, bk: 8, tm: 4, tn: 4 },
  { bm: 64, bn: 64, bk: 16, tm: 8, tn: 4 },
  { bm: 32, bn: 32, bk: 8, tm: 4, tn: 4 },
];

/** Invocations per workgroup of a tile config. */
export const tileThreads = (t: TileConfig) => (t.bm / t.tm) * (t.bn / t.tn);

/** Throws unless `t` is a valid tile config (the runner may still reject it on a device's limits). */
export function checkTile(t: TileConfig): void {
  const ok =
    [t.bm, t.bn, t.bk, t.tm, t.tn].every((v) => Number.isInteger(v) && v > 0) &&
    t.tm % 4 === 0 &&
    t.tn % 4 === 0 &&
    t.bk % 4 === 0 &&
    t.bm % t.tm === 0 &&
    t.bn % t.tn === 0 &&
    tileThreads(t) <= 1024;
  if (!ok) throw new Error(`invalid matmul tile ${JSON.stringify(t)}: tm, tn, bk multiples of 4, bm % tm = bn % tn = 0, at most 1024 invocations`);
}

/** Workgroup memory bytes of a tile config (two buffers of A and B tiles, f32). */
export const tileSharedBytes = (t: TileConfig) => 2 * t.bk * (t.bm + t.bn) * 4;

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

export const GELU_WGSL = `
const GELU_C : f32 = 0.7978845608028654;
fn gelu4(x : vec4<f32>) -> vec4<f32> {
  let u = clamp(GELU_C * (x + 0.044715 * x * x * x), vec4<f32>(-15.0), vec4<f32>(15.0));
  return 0.5 * x * (1.0 + tanh(u));
}
fn geluGrad4(x : vec4<f32>) -> vec4<f32> {
  let t = tanh(clamp(GELU_C * (x + 0.044715 * x * x * x), vec4<f32>(-15.0), vec4<f32>(15.0)));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 0.134145 * x * x);
}`;

export function matmul(p: MatmulParams): KernelSpec {
  const M = dim('matmul m', p.m);
  const N = dim('matmul n', p.n);
  const K = dim('matmul k', p.k);
  const batch = dim('matmul batch', p.batch ?? 1);
  const transA = !!p.transA;
  const transB = !!p.transB;
  const gelu = p.gelu ?? 'none';
  const t = p.tile ?? defaultTile(M, N, batch);
  checkTile(t);
  const sA = p.strideA ?? M * K;
  const sB = p.strideB ?? K * N;
  const sC = p.strideC ?? M * N;
  for (const [w, s] of [['strideA', sA], ['strideB', sB], ['strideC', sC]] as const) dim(`matmul ${w}`, s, 0);
  if (gelu !== 'none' && p.geluBackward) throw new Error('matmul: gelu and geluBackward are exclusive');

  const { bm: BM, bn: BN, bk: BK, tm: TM, tn: TN } = t;
  const TX = BN / TN;
  const TY = BM / TM;
  const THREADS = TX * TY;
  const CM = TM / 4;
  const CN = TN / 4;
  const ops = operandTypes(p);
  const toF32 = (X: 'A' | 'B', e: string, vec: boolean) => convertToF32(X === 'A' ? ops.a : ops.b, ops.round, e, vec);
  const offA = p.offsetA ?? 0;
  const offB = p.offsetB ?? 0;

  // vec4 global access needs the contiguous dimension and the batch stride to be multiples of 4.
  const aKMajor = transA; // A stored [K][M]: m contiguous
  const bKMajor = !transB; // B stored [K][N]: n contiguous
  const aContig = aKMajor ? M : K;
  const bContig = bKMajor ? N : K;
  const vecA = aContig % 4 === 0 && (batch === 1 || sA % 4 === 0) && offA % 4 === 0;
  const vecB = bContig % 4 === 0 && (batch === 1 || sB % 4 === 0) && offB % 4 === 0;
  const vecC = N % 4 === 0 && (batch === 1 || sC % 4 === 0);

  const { bindings, types } = matmulBindings(p, { vecA, vecB, vecC });

  /**
   * Load code for one operand tile (BF free-dim rows × BK), into vec4 registers `${r}_i`: group g of
   * 4 consecutive elements along the contiguous dimension.
   */
  const loader = (X: 'A' | 'B', F: number, BF: number, kMajor: boolean, vec: boolean, stride: number) => {
    const groups = (BF * BK) / 4;
    const per = cdiv(groups, THREADS);
    const off = X === 'A' ? offA : offB;
    const base = `${batch > 1 && stride > 0 ? `z * ${stride}u` : '0u'}${off ? ` + ${off}u` : ''}`;
    const r = X === 'A' ? 'ra' : 'rb';
    const f0 = X === 'A' ? 'm0' : 'n0';
    const sh = X === 'A' ? 'As' : 'Bs';
    const decl = range(per).map((i) => `var ${r}_${i} = vec4<f32>(0.0);`).join('\n  ');
    const load = (guardK: boolean) =>
      range(per)
        .map((i) => {
          const g = `(lid + ${i * THREADS}u)`;
          const skip = (i + 1) * THREADS > groups ? `if (${g} < ${groups}u) ` : '';
          let body: string;
          if (kMajor) {
            // rows of the stored matrix are k; 4 consecutive free-dim elements
            const kr = `${g} / ${BF / 4}u`;
            const fq = `${g} % ${BF / 4}u`;
            if (vec) {
              const kk = guardK ? `min(k0 + ${kr}, ${K - 1}u)` : `(k0 + ${kr})`;
              const idx = `(${base} + ${kk} * ${F}u + min(${f0} + ${fq} * 4u, ${F - 4}u)) / 4u`;
              const v = toF32(X, `${X}[${idx}]`, true);
              body = guardK ? `${r}_${i} = select(vec4<f32>(0.0), ${v}, k0 + ${kr} < ${K}u);` : `${r}_${i} = ${v};`;
            } else {
              const kk = guardK ? `min(k0 + ${kr}, ${K - 1}u)` : `(k0 + ${kr})`;
              const comps = range(4).map((j) => toF32(X, `${X}[${base} + ${kk} * ${F}u + min(${f0} + ${fq} * 4u + ${j}u, ${F - 1}u)]`, false));
              const v = `vec4<f32>(${comps.join(', ')})`;
              body = guardK ? `${r}_${i} = select(vec4<f32>(0.0), ${v}, k0 + ${kr} < ${K}u);` : `${r}_${i} = ${v};`;
            }
          } else {
            // rows of the stored matrix are the free dim; 4 consecutive k
            const fr = `${g} / ${BK / 4}u`;
            const kq = `${g} % ${BK / 4}u`;
            const f = `min(${f0} + ${fr}, ${F - 1}u)`;
            if (vec) {
              const idx = `(${base} + ${f} * ${K}u + ${guardK ? `min(k0 + ${kq} * 4u, ${K - 4}u)` : `k0 + ${kq} * 4u`}) / 4u`;
              const v = toF32(X, `${X}[${idx}]`, true);
              body = guardK ? `${r}_${i} = select(vec4<f32>(0.0), ${v}, k0 + ${kq} * 4u < ${K}u);` : `${r}_${i} = ${v};`;
            } else {
              const comps = range(4).map((j) => {
                const k = `k0 + ${kq} * 4u + ${j}u`;
                const e = toF32(X, `${X}[${base} + ${f} * ${K}u + ${guardK ? `min(${k}, ${K - 1}u)` : k}]`, false);
                return guardK ? `select(0.0, ${e}, ${k} < ${K}u)` : e;
              });
              body = `${r}_${i} = vec4<f32>(${comps.join(', ')});`;
            }
          }
          return `${skip}{ ${body} }`;
        })
        .join('\n      ');
    const store = range(per)
      .map((i) => {
        const g = `(lid + ${i * THREADS}u)`;
        const skip = (i + 1) * THREADS > groups ? `if (${g} < ${groups}u) ` : '';
        if (kMajor) return `${skip}{ ${sh}[sb + ${g}] = ${r}_${i}; }`;
        // transpose 4 consecutive k of free-dim row fr into sh[k][fr]
        const fr = `${g} / ${BK / 4}u`;
        const kq = `${g} % ${BK / 4}u`;
        return `${skip}{ let fr = ${fr}; let kq = ${kq}; ${range(4)
          .map((j) => `${sh}[sb + (kq * 4u + ${j}u) * ${BF / 4}u + fr / 4u][fr % 4u] = ${r}_${i}[${j}];`)
          .join(' ')} }`;
      })
      .join('\n      ');
    return { decl, load, store };
  };

  const la = loader('A', M, BM, aKMajor, vecA, sA);
  const lb = loader('B', N, BN, bKMajor, vecB, sB);
  const nFull = Math.floor(K / BK);
  const nTiles = cdiv(K, BK);
  const loadTile = (which: string) =>
    nFull === nTiles
      ? `${la.load(false)}\n      ${lb.load(false)}`
      : nFull === 0
        ? `${la.load(true)}\n      ${lb.load(true)}`
        : `if (${which} < ${nFull}u) {
      ${la.load(false)}
      ${lb.load(false)}
      } else {
      ${la.load(true)}
      ${lb.load(true)}
      }`;

  const accDecl = range(TM)
    .flatMap((r) => range(CN).map((d) => `var acc_${r}_${d} = vec4<f32>(0.0);`))
    .join('\n  ');
  const inner = range(BK)
    .map((kk) => {
      const a = range(CM).map((c) => `let a${c} = As[ab + ${(kk * BM) / 4 + c * TY}u + ty];`);
      const b = range(CN).map((d) => `let b${d} = Bs[bb + ${(kk * BN) / 4 + d * TX}u + tx];`);
      const f = range(TM).flatMap((r) => range(CN).map((d) => `acc_${r}_${d} = fma(vec4<f32>(a${r >> 2}[${r & 3}]), b${d}, acc_${r}_${d});`));
      return `{\n      ${[...a, ...b, ...f].join('\n      ')}\n    }`;
    })
    .join('\n    ');

  const epi = matmulEpilogue(p, { vecC });
  const cBase = batch > 1 ? `z * ${sC}u` : '0u';
  const stores = range(TM)
    .flatMap((r) =>
      range(CN).map((d) => {
        const m = `m0 + ${(r >> 2) * 4 * TY + (r & 3)}u + ty * 4u`;
        const n = `n0 + ${d * 4 * TX}u + tx * 4u`;
        const guard = [M % BM ? `m < ${M}u` : '', N % BN ? `n < ${N}u` : ''].filter(Boolean).join(' && ');
        return `{ let m = ${m}; let n = ${n};${guard ? ` if (${guard})` : ''} {
    let ci = ${cBase} + m * ${N}u + n;
    ${epi.apply(`acc_${r}_${d}`)}
  } }`;
      }),
    )
    .join('\n  ');

  const sbA = (BK * BM) / 4;
  const sbB = (BK * BN) / 4;
  const body = `${epi.helpers}${ops.round ? ROUND_F16_WGSL : ''}
var<workgroup> As : array<vec4<f32>, ${2 * sbA}>;
var<workgroup> Bs : array<vec4<f32>, ${2 * sbB}>;

@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let tx = lid % ${TX}u;
  let ty = lid / ${TX}u;
  let n0 = wid.x * ${BN}u;
  let m0 = wid.y * ${BM}u;
  let z = wid.z;
  ${accDecl}
  ${la.decl}
  ${lb.decl}
  {
    let k0 = 0u;
    ${loadTile('0u')}
    let sb = 0u;
    ${la.store}
    ${lb.store}
  }
  workgroupBarrier();
  for (var t = 0u; t < ${nTiles}u; t = t + 1u) {
    let nxt = t + 1u;
    if (nxt < ${nTiles}u) {
      let k0 = nxt * ${BK}u;
      ${loadTile('nxt')}
    }
    let ab = (t % 2u) * ${sbA}u;
    let bb = (t % 2u) * ${sbB}u;
    ${inner}
    if (nxt < ${nTiles}u) {
      let sb = (nxt % 2u) * ${sbA}u;
      ${la.store}
    }
    if (nxt < ${nTiles}u) {
      let sb = (nxt % 2u) * ${sbB}u;
      ${lb.store}
    }
    workgroupBarrier();
  }
  ${stores}
}`;
  return makeKernel({
    label: `matmul ${matmulLabel(p)} [${BM}x${BN}x${BK}/${TM}x${TN}]`,
    bindings,
    types,
    body,
    enables: ops.a === 'f16' || ops.b === 'f16' ? ['f16'] : [],
    workgroups: [cdiv(N, BN), cdiv(M, BM), batch],
    flops: 2 * M * N * K * batch,
    bytes: matmulBytes(p),
  });
}

/** Storage types of A and B and whether f32 operands are rounded through f16. */
export function operandTypes(p: MatmulParams): { a: MatmulDtype; b: MatmulDtype; round: boolean } {
  const d = p.dtype ?? 'f32';
  return { a: p.aType ?? d, b: p.bType ?? d, round: !!p.roundF16 };
}

/**
 * f32 → nearest f16 value (ties to even), kept in f32: the mantissa rounded to 10 bits in integer
 * arithmetic, magnitudes above f16's largest finite value (65504) to ±inf (so a loss-scale overflow
 * shows), f16's subnormal range rounded as if normal. Integer arithmetic because compilers may fold
 * f32(f16(x)) back to x (Mesa's NIR does, for operations not marked exact).
 */
export const ROUND_F16_WGSL = `
fn r16v(x : vec4<f32>) -> vec4<f32> {
  let u = bitcast<vec4<u32>>(x);
  let y = bitcast<vec4<f32>>((u + vec4<u32>(0xfffu) + ((u >> vec4<u32>(13u)) & vec4<u32>(1u))) & vec4<u32>(0xffffe000u));
  let inf = bitcast<vec4<f32>>((u & vec4<u32>(0x80000000u)) | vec4<u32>(0x7f800000u));
  return select(y, inf, abs(y) > vec4<f32>(65504.0));
}
fn r16(x : f32) -> f32 { return r16v(vec4<f32>(x)).x; }`;

/** WGSL converting an operand element (or vec4) of storage type `st` to f32, rounded to f16 when `round` (ROUND_F16_WGSL). */
export function convertToF32(st: MatmulDtype, round: boolean, e: string, vec: boolean): string {
  if (st === 'f16') return vec ? `vec4<f32>(${e})` : `f32(${e})`;
  if (round) return vec ? `r16v(${e})` : `r16(${e})`;
  return e;
}

/** 'NT 512x768x768 f16+bias+gelu(pre)': layout, shape, precision and epilogue of a matmul. */
export function matmulLabel(p: MatmulParams): string {
  const ops = operandTypes(p);
  const batch = p.batch ?? 1;
  const gelu = p.gelu ?? 'none';
  const prec = ops.a === 'f16' && ops.b === 'f16' ? ' f16' : ops.round ? ' f16-rounded' : ops.a === 'f16' || ops.b === 'f16' ? ' mixed' : '';
  const extras = [
    (p.alpha ?? 1) !== 1 ? `*${p.alpha}` : '',
    p.bias ? '+bias' : '',
    p.geluBackward ? "*gelu'" : '',
    p.residual ? '+residual' : '',
    p.accumulate ? '+=' : '',
    gelu === 'act' ? '+gelu' : gelu === 'both' ? '+gelu(pre)' : '',
  ].join('');
  return `${p.transA ? 'T' : 'N'}${p.transB ? 'T' : 'N'} ${batch > 1 ? `${batch}x` : ''}${p.m}x${p.n}x${p.k}${prec}${extras}`;
}

/** Ideal bytes moved by a matmul (each operand and epilogue tensor once). */
export function matmulBytes(p: MatmulParams): number {
  const ops = operandTypes(p);
  const batch = p.batch ?? 1;
  const gelu = p.gelu ?? 'none';
  const eb = (t: MatmulDtype) => (t === 'f16' ? 2 : 4);
  return batch * (p.m * p.k * eb(ops.a) + p.k * p.n * eb(ops.b) + p.m * p.n * 4 * (1 + (p.residual ? 1 : 0) + (p.geluBackward ? 1 : 0) + (p.accumulate ? 1 : 0) + (gelu === 'both' ? 1 : 0)));
}

/**
 * Bindings and WGSL types of a matmul: A, B, [bias], [R], [F], C, [pre]. A and B are vec4 arrays where
 * `vecA` / `vecB`, the [M, N] tensors where `vecC`.
 */
export function matmulBindings(p: MatmulParams, v: { vecA: boolean; vecB: boolean; vecC: boolean }): { bindings: BindingSpec[]; types: Record<string, string> } {
  const ops = operandTypes(p);
  const gelu = p.gelu ?? 'none';
  const bindings: BindingSpec[] = [
    { name: 'A', access: 'read' },
    { name: 'B', access: 'read' },
  ];
  if (p.bias) bindings.push({ name: 'bias', access: 'read' });
  if (p.residual) bindings.push({ name: 'R', access: 'read' });
  if (p.geluBackward) bindings.push({ name: 'F', access: 'read' });
  bindings.push({ name: 'C', access: 'read_write', overwrite: !p.accumulate });
  if (gelu === 'both') bindings.push({ name: 'pre', access: 'read_write', overwrite: true });
  const cType = v.vecC ? 'array<vec4<f32>>' : 'array<f32>';
  const types: Record<string, string> = {
    A: v.vecA ? `array<vec4<${ops.a}>>` : `array<${ops.a}>`,
    B: v.vecB ? `array<vec4<${ops.b}>>` : `array<${ops.b}>`,
    bias: p.n % 4 === 0 ? 'array<vec4<f32>>' : 'array<f32>',
    R: cType,
    F: cType,
    C: cType,
    pre: cType,
  };
  return { bindings, types };
}

/**
 * The epilogue of a matmul on 4 consecutive columns n..n+3 of row m (flat element index ci of C):
 * `helpers` (WGSL functions, GELU when needed) and `apply(acc)`, the statements that take the vec4
 * accumulator `acc` (in scope: m, n, ci) through alpha, bias, gelu', residual, accumulate and gelu,
 * and store it. Columns past N are never read or written when C is scalar.
 */
export function matmulEpilogue(p: MatmulParams, v: { vecC: boolean }): { helpers: string; apply: (acc: string) => string } {
  const N = p.n;
  const gelu = p.gelu ?? 'none';
  const alpha = p.alpha ?? 1;
  const vecC = v.vecC;
  const ld = (X: string) =>
    vecC
      ? `fn ld_${X}(ci : u32, n : u32) -> vec4<f32> { return ${X}[ci / 4u]; }`
      : `fn ld_${X}(ci : u32, n : u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  ${range(4)
    .map((j) => `if (n + ${j}u < ${N}u) { v[${j}] = ${X}[ci + ${j}u]; }`)
    .join('\n  ')}
  return v;
}`;
  const stf = (X: string) =>
    vecC
      ? `fn st_${X}(ci : u32, n : u32, v : vec4<f32>) { ${X}[ci / 4u] = v; }`
      : `fn st_${X}(ci : u32, n : u32, v : vec4<f32>) {
  ${range(4)
    .map((j) => `if (n + ${j}u < ${N}u) { ${X}[ci + ${j}u] = v[${j}]; }`)
    .join('\n  ')}
}`;
  const helpers: string[] = [];
  if (gelu !== 'none' || p.geluBackward) helpers.push(GELU_WGSL);
  if (p.bias) {
    helpers.push(
      N % 4 === 0
        ? `fn ld_bias(n : u32) -> vec4<f32> { return bias[n / 4u]; }`
        : `fn ld_bias(n : u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  ${range(4)
    .map((j) => `if (n + ${j}u < ${N}u) { v[${j}] = bias[n + ${j}u]; }`)
    .join('\n  ')}
  return v;
}`,
    );
  }
  if (p.residual) helpers.push(ld('R'));
  if (p.geluBackward) helpers.push(ld('F'));
  if (p.accumulate) helpers.push(ld('C'));
  helpers.push(stf('C'));
  if (gelu === 'both') helpers.push(stf('pre'));
  const apply = (acc: string) => {
    const lines = [`var v = ${acc}${alpha !== 1 ? ` * ${f32lit(alpha)}` : ''};`];
    if (p.bias) lines.push('v = v + ld_bias(n);');
    if (p.geluBackward) lines.push('v = v * geluGrad4(ld_F(ci, n));');
    if (p.residual) lines.push('v = v + ld_R(ci, n);');
    if (p.accumulate) lines.push('v = v + ld_C(ci, n);');
    if (gelu === 'both') lines.push('st_pre(ci, n, v);');
    if (gelu !== 'none') lines.push('v = gelu4(v);');
    lines.push('st_C(ci, n, v);');
    return lines.join('\n    ');
  };
  return { helpers: helpers.join('\n'), apply };
}

export interface SplitKParams {
  /** Rows of C (columns of the stored A [K, M]). */
  m: number;
  /** Columns of C and of B [K, N]. */
  n: number;
  k: number;
  /** K chunks (must divide k). */
  splits: number;
  /** C += instead of C =. */
  accumulate?: boolean;
  tile?: TileConfig;
  dtype?: MatmulDtype;
}

/**
 * C (+)= Aᵀ·B in `splits` K chunks. Run `partial` (bindings A, B, C = the scratch of `scratchFloats`
 * floats) then `reduce` (bindings partial = that scratch, C).
 */
export function matmulSplitK(p: SplitKParams): { partial: KernelSpec; reduce: KernelSpec; scratchFloats: number } {
  const M = dim('matmulSplitK m', p.m);
  const N = dim('matmulSplitK n', p.n);
  const K = dim('matmulSplitK k', p.k);
  const S = dim('matmulSplitK splits', p.splits);
  if (K % S) throw new Error(`matmulSplitK: ${S} splits do not divide k = ${K}`);
  const kc = K / S;
  const partial = matmul({
    m: M,
    n: N,
    k: kc,
    transA: true,
    batch: S,
    strideA: kc * M,
    strideB: kc * N,
    strideC: M * N,
    ...(p.tile ? { tile: p.tile } : { tile: defaultTile(M, N, S) }),
    ...(p.dtype ? { dtype: p.dtype } : {}),
  });
  const total = M * N;
  const wg = cdiv(total, 256);
  const gx = Math.min(wg, 65535);
  const reduce = makeKernel({
    label: `matmulSplitK reduce ${S}x${M}x${N}${p.accumulate ? ' +=' : ''}`,
    bindings: [
      { name: 'partial', access: 'read' },
      { name: 'C', access: 'read_write', overwrite: !p.accumulate },
    ],
    types: { partial: 'array<f32>', C: 'array<f32>' },
    workgroups: [gx, cdiv(wg, gx), 1],
    body: `@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let i = (wid.y * ${gx}u + wid.x) * 256u + lid;
  if (i >= ${total}u) { return; }
  var s = ${p.accumulate ? 'C[i]' : '0.0'};
  for (var z = 0u; z < ${S}u; z = z + 1u) { s = s + partial[z * ${total}u + i]; }
  C[i] = s;
}`,
    bytes: (S + 1 + (p.accumulate ? 1 : 0)) * total * 4,
  });
  return { partial, reduce, scratchFloats: S * total };
}

export interface ColSumParams {
  m: number;
  n: number;
  /** out[n] += Σ (gradient accumulation) instead of out[n] = Σ. */
  accumulate?: boolean;
  /** Rows summed by one workgroup of stage 1 (default 256). */
  rowsPerChunk?: number;
}

/**
 * Deterministic column sum of X [M, N] into out [N]. Run `partial` then `reduce`; both bind the
 * scratch buffer `partial` of `scratchFloats` floats. Bindings: partial: (X, partial); reduce:
 * (partial, out).
 */
export function colSum(p: ColSumParams): { partial: KernelSpec; reduce: KernelSpec; scratchFloats: number } {
  const M = dim('colSum m', p.m);
  const N = dim('colSum n', p.n);
  const R = dim('colSum rowsPerChunk', p.rowsPerChunk ?? 256);
  const chunks = cdiv(M, R);
  // stage 1: 64 columns × 4 row lanes per workgroup; lane l sums rows l, l+4, ... of the chunk, then
  // the 4 lanes are added in a fixed order.
  const partial = makeKernel({
    label: `colSum partial ${M}x${N}`,
    bindings: [
      { name: 'X', access: 'read' },
      { name: 'partial', access: 'read_write', overwrite: true },
    ],
    types: { X: 'array<f32>', partial: 'array<f32>' },
    workgroups: [cdiv(N, 64), chunks, 1],
    body: `var<workgroup> lanes : array<f32, 256>;
@compute @workgroup_size(64, 4)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_id) li : vec3<u32>) {
  let n = wid.x * 64u + li.x;
  let r0 = wid.y * ${R}u;
  var s = 0.0;
  if (n < ${N}u) {
    for (var r = r0 + li.y; r < min(r0 + ${R}u, ${M}u); r = r + 4u) { s = s + X[r * ${N}u + n]; }
  }
  lanes[li.y * 64u + li.x] = s;
  workgroupBarrier();
  if (li.y == 0u && n < ${N}u) {
    partial[wid.y * ${N}u + n] = ((lanes[li.x] + lanes[64u + li.x]) + lanes[128u + li.x]) + lanes[192u + li.x];
  }
}`,
    bytes: M * N * 4 + chunks * N * 4,
  });
  const reduce = makeKernel({
    label: `colSum reduce ${chunks}x${N}${p.accumulate ? ' +=' : ''}`,
    bindings: [
      { name: 'partial', access: 'read' },
      { name: 'out', access: 'read_write', overwrite: !p.accumulate },
    ],
    types: { partial: 'array<f32>', out: 'array<f32>' },
    workgroups: [cdiv(N, 64), 1, 1],
    body: `@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid : vec3<u32>) {
  let n = gid.x;
  if (n >= ${N}u) { return; }
  var s = 0.0;
  for (var c = 0u; c < ${chunks}u; c = c + 1u) { s = s + partial[c * ${N}u + n]; }
  out[n] = ${p.accumulate ? 'out[n] + s' : 's'};
}`,
    bytes: chunks * N * 4 + N * 4,
  });
  return { partial, reduce, scratchFloats: chunks * N };
}
