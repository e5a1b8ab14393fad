/**
 * Block-sparse products (the tfjs programs of ../kernels.ts ported to compile-time shapes), with the
 * contract of @patchflow/tensor's blockSparseMatMul: w [K, N] in b×b blocks, mask [K/b, N/b] (i32,
 * non-zero = kept) expanded to M:
 *   forward: y = x · (w ⊙ M) (+ bias)         x [rows, K], y [rows, N]
 *   dx:      dx (+)= dy · (w ⊙ M)ᵀ            dy [rows, N], dx [rows, K]
 *   dw:      dw (+)= (xᵀ · dy) ⊙ M            exact zeros outside kept blocks (kept as-is when accumulating)
 * Only kept blocks are read or computed: each workgroup skips masked reduction blocks with a branch
 * that is uniform across it (the mask entry is broadcast through workgroupUniformLoad, so barriers
 * stay in uniform control flow). Tile shapes depend only on b (matMulTiles / gradWTiles of kernels.ts).
 */
import { gradWTiles, matMulTiles } from '../kernels.js';
import { cdiv, dim, makeKernel, type BindingSpec, type KernelSpec } from './kernel.js';

export interface BlockSparseParams {
  rows: number;
  k: number;
  n: number;
  blockSize: number;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const vec = (lanes: number) => (lanes === 1 ? 'f32' : `vec${lanes}<f32>`);
const lane = (expr: string, i: number, lanes: number) => (lanes === 1 ? expr : `${expr}[${i}]`);
const store = (arr: string, idx: string, value: string, lanes: number) =>
  lanes === 1 ? `${arr}[${idx}] = ${value};` : `{ let si = ${idx}; ${arr}[si / ${lanes}][si % ${lanes}] = ${value}; }`;

function check(p: BlockSparseParams) {
  const M = dim('blockSparse rows', p.rows);
  const K = dim('blockSparse k', p.k);
  const N = dim('blockSparse n', p.n);
  const b = dim('blockSparse blockSize', p.blockSize);
  if (K % b || N % b) throw new Error(`blockSparse: block size ${b} does not divide w [${K}, ${N}]`);
  return { M, K, N, b };
}

/**
 * out[m, o] = Σ_r A[m, r] · W'(r, o) over the reduction blocks the mask keeps, W' = W (forward) or Wᵀ
 * (dx). A is [rows, R]; out is [rows, outCols].
 */
function product(kind: 'forward' | 'dx', p: BlockSparseParams & { bias?: boolean; accumulate?: boolean }): KernelSpec {
  const { M, K, N, b } = check(p);
  const transposeW = kind === 'dx';
  const R = transposeW ? N : K;
  const outCols = transposeW ? K : N;
  const { tileM, tileN, tileK, perM, perN, threadsM, threadsN } = matMulTiles(b);
  const nt = threadsM * threadsN;
  const numRB = R / b;
  const loadB = transposeW
    ? `let c = e / ${tileK};
          let kk = e % ${tileK};
          ${store('Bs', `kk * ${tileN} + c`, `W[(col0 + c) * ${N} + rBase + kk]`, perN)}`
    : `${store('Bs', 'e', `W[(rBase + e / ${tileN}) * ${N} + col0 + e % ${tileN}]`, perN)}`;
  const bindings: BindingSpec[] = [
    { name: 'A', access: 'read' },
    { name: 'W', access: 'read' },
    { name: 'mask', access: 'read' },
  ];
  if (p.bias) bindings.push({ name: 'bias', access: 'read' });
  bindings.push({ name: 'out', access: 'read_write', overwrite: !p.accumulate });
  const body = `var<workgroup> As : array<${vec(perM)}, ${tileK * threadsM}>;
var<workgroup> Bs : array<${vec(perN)}, ${tileK * threadsN}>;
var<workgroup> keepFlag : array<i32, 2>;
@compute @workgroup_size(${threadsN}, ${threadsM})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_id) li : vec3<u32>, @builtin(local_invocation_index) lidx0 : u32) {
  let tx = i32(li.x);
  let ty = i32(li.y);
  let lidx = i32(lidx0);
  let col0 = i32(wid.x) * ${tileN};
  let ob = col0 / ${b};
  let row0 = i32(wid.y) * ${tileM};
  ${range(perM).map((r) => `var acc_${r} = ${vec(perN)}(0.0);`).join('\n  ')}
  for (var rb = 0; rb < ${numRB}; rb = rb + 1) {
    // double-buffered flag: a slow reader of slot rb%2 cannot see iteration rb+2's write, which
    // comes after iteration rb+1's barrier
    let slot = rb % 2;
    if (lidx == 0) {
      keepFlag[slot] = select(0, 1, mask[${transposeW ? `ob * ${N / b} + rb` : `rb * ${N / b} + ob`}] != 0);
    }
    if (workgroupUniformLoad(&keepFlag[slot]) != 0) {
      for (var r0 = 0; r0 < ${b}; r0 = r0 + ${tileK}) {
        let rBase = rb * ${b} + r0;
        for (var e = lidx; e < ${tileM * tileK}; e = e + ${nt}) {
          let mm = e / ${tileK};
          let kk = e % ${tileK};
          var v = 0.0;
          if (row0 + mm < ${M}) { v = A[(row0 + mm) * ${R} + rBase + kk]; }
          ${store('As', `kk * ${tileM} + mm`, 'v', perM)}
        }
        for (var e = lidx; e < ${tileK * tileN}; e = e + ${nt}) {
          ${loadB}
        }
        workgroupBarrier();
        for (var kk = 0; kk < ${tileK}; kk = kk + 1) {
          let bv = Bs[kk * ${threadsN} + tx];
          let av = As[kk * ${threadsM} + ty];
          ${range(perM).map((r) => `acc_${r} = fma(${vec(perN)}(${lane('av', r, perM)}), bv, acc_${r});`).join('\n          ')}
        }
        workgroupBarrier();
      }
    }
  }
  ${range(perM)
    .map(
      (r) => `if (row0 + ty * ${perM} + ${r} < ${M}) {
    let base = (row0 + ty * ${perM} + ${r}) * ${outCols} + col0 + tx * ${perN};
    ${range(perN)
      .map((c) => {
        let v = lane(`acc_${r}`, c, perN);
        if (p.bias) v += ` + bias[col0 + tx * ${perN} + ${c}]`;
        if (p.accumulate) v = `out[base + ${c}] + ${v}`;
        return `out[base + ${c}] = ${v};`;
      })
      .join(' ')}
  }`,
    )
    .join('\n  ')}
}`;
  return makeKernel({
    label: `blockSparse ${kind} ${M}x${K}x${N} b=${b}${p.bias ? ' +bias' : ''}${p.accumulate ? ' +=' : ''}`,
    bindings,
    types: { A: 'array<f32>', W: 'array<f32>', mask: 'array<i32>', bias: 'array<f32>', out: 'array<f32>' },
    workgroups: [outCols / tileN, cdiv(M, tileM), 1],
    body,
    flops: 2 * M * K * N,
  });
}

/** Bindings: x, w, mask (i32), [bias], y. */
export const blockSparseForward = (p: BlockSparseParams & { bias?: boolean }) => product('forward', p);

/** Bindings: dy, w, mask (i32), dx. */
export const blockSparseDx = (p: BlockSparseParams & { accumulate?: boolean }) => product('dx', p);

/** Bindings: x, dy, mask (i32), dw. */
export function blockSparseDw(p: BlockSparseParams & { accumulate?: boolean }): KernelSpec {
  const { M, K, N, b } = check(p);
  const { tile, per, threads, chunkM } = gradWTiles(b);
  const nt = threads * threads;
  const acc = !!p.accumulate;
  const body = `var<workgroup> Xs : array<${vec(per)}, ${chunkM * threads}>;
var<workgroup> Ds : array<${vec(per)}, ${chunkM * threads}>;
var<workgroup> keepFlag : i32;
@compute @workgroup_size(${threads}, ${threads})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_id) li : vec3<u32>, @builtin(local_invocation_index) lidx0 : u32) {
  let tx = i32(li.x);
  let ty = i32(li.y);
  let lidx = i32(lidx0);
  let n0 = i32(wid.x) * ${tile};
  let k0 = i32(wid.y) * ${tile};
  if (lidx == 0) { keepFlag = select(0, 1, mask[(k0 / ${b}) * ${N / b} + n0 / ${b}] != 0); }
  ${range(per).map((r) => `var acc_${r} = ${vec(per)}(0.0);`).join('\n  ')}
  // a masked block skips the reduction and writes its zeros (or leaves dw as is when accumulating)
  let keep = workgroupUniformLoad(&keepFlag) != 0;
  if (keep) {
    for (var m0 = 0; m0 < ${M}; m0 = m0 + ${chunkM}) {
      for (var e = lidx; e < ${chunkM * tile}; e = e + ${nt}) {
        let gm = m0 + e / ${tile};
        let c = e % ${tile};
        var xv = 0.0;
        var dv = 0.0;
        if (gm < ${M}) {
          xv = X[gm * ${K} + k0 + c];
          dv = Dy[gm * ${N} + n0 + c];
        }
        ${store('Xs', 'e', 'xv', per)}
        ${store('Ds', 'e', 'dv', per)}
      }
      workgroupBarrier();
      for (var mm = 0; mm < ${chunkM}; mm = mm + 1) {
        let dvec = Ds[mm * ${threads} + tx];
        let xvec = Xs[mm * ${threads} + ty];
        ${range(per).map((r) => `acc_${r} = fma(${vec(per)}(${lane('xvec', r, per)}), dvec, acc_${r});`).join('\n        ')}
      }
      workgroupBarrier();
    }
  }
  ${acc ? 'if (keep) {' : '{'}
  ${range(per)
    .map(
      (r) => `{
    let base = (k0 + ty * ${per} + ${r}) * ${N} + n0 + tx * ${per};
    ${range(per)
      .map((c) => `dw[base + ${c}] = ${acc ? `dw[base + ${c}] + ` : ''}${lane(`acc_${r}`, c, per)};`)
      .join(' ')}
  }`,
    )
    .join('\n  ')}
  }
}`;
  return makeKernel({
    label: `blockSparse dw ${M}x${K}x${N} b=${b}${acc ? ' +=' : ''}`,
    bindings: [
      { name: 'X', access: 'read' },
      { name: 'Dy', access: 'read' },
      { name: 'mask', access: 'read' },
      { name: 'dw', access: 'read_write', overwrite: !acc },
    ],
    types: { X: 'array<f32>', Dy: 'array<f32>', mask: 'array<i32>', dw: 'array<f32>' },
    workgroups: [N / tile, K / tile, 1],
    body,
    flops: 2 * M * K * N,
  });
}
