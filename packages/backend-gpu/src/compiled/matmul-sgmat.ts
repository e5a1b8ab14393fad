/**
 * Dense matmul on subgroup matrices (WebGPU feature `chromium-experimental-subgroup-matrix`, i.e.
 * tensor cores through Vulkan cooperative matrices): f16 operands, f32 accumulation, the same
 * parameters, bindings and epilogues as `matmul` (matmul.ts), so the compiled step swaps one for the
 * other. f32 operands are rounded to f16 as they are staged (`roundF16` is implied), f16 operands
 * (a weight copy, `aType`/`bType: 'f16'`, `offsetA`/`offsetB`) are copied as they are.
 *
 * Kernel: a workgroup computes a BM×BN tile of C with WM×WN subgroups (of `subgroupSize`
 * invocations), each owning RT×CT result matrices of 16×16 (BM = WM·RT·16, BN = WN·CT·16). K is
 * walked BK at a time: the workgroup stages A's BM×BK and B's BK×BN tiles in workgroup memory as f16,
 * in the operand's own storage order (a transposed operand is loaded column-major by
 * subgroupMatrixLoad, so no shuffle is needed), zero-filled past the matrix edges. The next tile's
 * global loads are issued into registers before the current tile's multiply-accumulates. The
 * epilogue stores each result matrix to a 16×16 f32 scratch of its subgroup, from where the
 * subgroup's invocations apply bias / gelu' / residual / accumulate / gelu to 8 elements each and
 * write C (guarded at the edges).
 *
 * Subgroup ids are `local_invocation_index / subgroupSize` (Vulkan: full subgroups, consecutive
 * invocations); the uniformity diagnostic is turned off because WGSL's analysis works per workgroup.
 *
 * Loads and stores name their majorness as a template argument
 * (`subgroupMatrixLoad<T, row_major>(p, offset, stride)`); Dawn versions before that spelling take
 * it as a bool argument, which later ones accept with a "deprecated builtin" warning printed for
 * every pipeline: `subgroupMatrixSyntax(device)` finds which one a device takes.
 */
import { cdiv, dim, makeKernel, type KernelSpec } from './kernel.js';
import { convertToF32, matmulBindings, matmulBytes, matmulEpilogue, matmulLabel, operandTypes, type MatmulParams } from './matmul.js';

/** Subgroups per workgroup (WM×WN), 16×16 result matrices per subgroup (RT×CT), K step BK. */
export interface SgTile {
  wm: number;
  wn: number;
  rt: number;
  ct: number;
  bk: number;
}

export interface SgMatmulParams extends Omit<MatmulParams, 'tile' | 'roundF16'> {
  sgTile?: SgTile;
  /** Invocations per subgroup (GPUAdapterInfo.subgroupMaxSize; 32 on NVIDIA). */
  subgroupSize?: number;
  /** Majorness as a bool argument (older Dawn) instead of a template argument. */
  legacyMajorness?: boolean;
}

export type SubgroupMatrixSyntax = 'template' | 'legacy';

const syntaxByDevice = new WeakMap<GPUDevice, Promise<SubgroupMatrixSyntax>>();

/**
 * Which spelling of subgroupMatrixLoad/Store the device's WGSL compiler takes without complaint: the
 * template-majorness one when a probe shader compiles without errors or warnings, else the bool one.
 */
export function subgroupMatrixSyntax(device: GPUDevice): Promise<SubgroupMatrixSyntax> {
  let p = syntaxByDevice.get(device);
  if (!p) {
    p = (async () => {
      const code = `enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read_write> o : array<f32>;
var<workgroup> w : array<f16, 256>;
@compute @workgroup_size(${32})
fn main() {
  let a = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&w, 0u, 16u);
  let b = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&w, 0u, 16u);
  subgroupMatrixStore<row_major>(&o, 0u, subgroupMatrixMultiply<f32>(a, b), 16u);
}`;
      device.pushErrorScope('validation');
      const module = device.createShaderModule({ code, label: 'subgroup-matrix syntax probe' });
      const info = await module.getCompilationInfo();
      await device.popErrorScope();
      return info.messages.some((m) => m.type === 'error' || m.type === 'warning') ? 'legacy' : 'template';
    })();
    syntaxByDevice.set(device, p);
  }
  return p;
}

/** Candidates for autotuning / benchmarking, smallest first. */
export const SG_TILE_CANDIDATES: SgTile[] = [
  { wm: 2, wn: 2, rt: 2, ct: 2, bk: 32 },
  { wm: 2, wn: 2, rt: 4, ct: 2, bk: 32 },
];

/**
 * 64×64 (4 subgroups of 2×2 matrices), except for large products with a long K, where 128×64 is
 * faster. Measured on an H200 (docs/bench/gpu-runs/f16-device-run-1): 64×64 beat 128×64 at every
 * 12L d768 T512 B8 product (K 768 to 4096), 128×64 won only at 4096³ (54 vs 45 TFLOP/s). Larger
 * tiles (16 matrices per subgroup) are untested: an earlier probe of that size did not finish.
 */
export function defaultSgTile(m: number, n: number, k = 0, batch = 1): SgTile {
  if (m * n * batch >= 4096 * 4096 && k >= 2048) return { wm: 2, wn: 2, rt: 4, ct: 2, bk: 32 };
  return { wm: 2, wn: 2, rt: 2, ct: 2, bk: 32 };
}

/** Workgroup memory bytes of an sg tile (A and B tiles in f16, padded, plus one 16×16 f32 scratch per subgroup). */
export function sgTileSharedBytes(t: SgTile): number {
  const BM = t.wm * t.rt * 16;
  const BN = t.wn * t.ct * 16;
  return 2 * (Math.max(BM * (t.bk + 8), t.bk * (BM + 8)) + Math.max(BN * (t.bk + 8), t.bk * (BN + 8))) + t.wm * t.wn * 256 * 4;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

export function matmulSubgroup(p: SgMatmulParams): KernelSpec {
  const M = dim('matmulSubgroup m', p.m);
  const N = dim('matmulSubgroup n', p.n);
  const K = dim('matmulSubgroup k', p.k);
  const batch = dim('matmulSubgroup batch', p.batch ?? 1);
  const SG = dim('matmulSubgroup subgroupSize', p.subgroupSize ?? 32);
  if (SG < 8 || 256 % SG) throw new Error(`matmulSubgroup: subgroup size ${SG} not supported (8..256, dividing 256)`);
  const transA = !!p.transA;
  const transB = !!p.transB;
  const t = p.sgTile ?? defaultSgTile(M, N, K, batch);
  const { wm: WM, wn: WN, rt: RT, ct: CT, bk: BK } = t;
  if (![WM, WN, RT, CT].every((v) => Number.isInteger(v) && v >= 1) || BK % 16 || BK < 16) throw new Error(`matmulSubgroup: invalid tile ${JSON.stringify(t)}`);
  const BM = WM * RT * 16;
  const BN = WN * CT * 16;
  const NSG = WM * WN;
  const THREADS = NSG * SG;
  const sA = p.strideA ?? M * K;
  const sB = p.strideB ?? K * N;
  const sC = p.strideC ?? M * N;
  const offA = p.offsetA ?? 0;
  const offB = p.offsetB ?? 0;
  const pp: MatmulParams = { ...p, roundF16: true };
  const ops = operandTypes(pp);

  // Each operand tile is stored as R rows × C contiguous columns, as in global memory:
  //   A [M,K]: BM × BK (row-major left matrix);  A [K,M] (transA): BK × BM (column-major)
  //   B [K,N]: BK × BN (row-major right matrix); B [N,K] (transB): BN × BK (column-major)
  const aRows = transA ? BK : BM;
  const aCols = transA ? BM : BK;
  const bRows = transB ? BN : BK;
  const bCols = transB ? BK : BN;
  const LDA = aCols + 8; // padding (16 bytes) against bank conflicts; keeps strides 16-byte multiples
  const LDB = bCols + 8;
  const aContig = transA ? M : K;
  const bContig = transB ? K : N;
  const vecA = aContig % 4 === 0 && (batch === 1 || sA % 4 === 0) && offA % 4 === 0;
  const vecB = bContig % 4 === 0 && (batch === 1 || sB % 4 === 0) && offB % 4 === 0;
  const vecC = N % 4 === 0 && (batch === 1 || sC % 4 === 0);
  const { bindings, types } = matmulBindings(pp, { vecA, vecB, vecC });
  const epi = matmulEpilogue(pp, { vecC });

  /**
   * Loader of one operand: registers r_i (vec4<f32>, already f16-rounded values) for groups of 4
   * contiguous elements of the R×C tile, `load` from global memory (zero past the matrix), `store` into
   * workgroup memory.
   */
  const loader = (X: 'A' | 'B', R: number, C: number, LD: number, vec: boolean) => {
    const groups = (R * C) / 4;
    const per = cdiv(groups, THREADS);
    const st = X === 'A' ? ops.a : ops.b;
    const stride = X === 'A' ? sA : sB;
    const off = X === 'A' ? offA : offB;
    const base = `${batch > 1 && stride > 0 ? `z * ${stride}u` : '0u'}${off ? ` + ${off}u` : ''}`;
    // global (row, col) of the tile's origin and the stored matrix's extent
    const kMajor = X === 'A' ? transA : !transB; // rows are k
    const rowOrigin = kMajor ? 'k0' : X === 'A' ? 'm0' : 'n0';
    const colOrigin = kMajor ? (X === 'A' ? 'm0' : 'n0') : 'k0';
    const rowsAll = kMajor ? K : X === 'A' ? M : N;
    const colsAll = kMajor ? (X === 'A' ? M : N) : K;
    const r = X === 'A' ? 'ra' : 'rb';
    const sh = X === 'A' ? 'As' : 'Bs';
    // f32 values are rounded to f16 by the store into workgroup memory (f16)
    const conv = (e: string, v: boolean) => convertToF32(st, false, e, v);
    const decl = range(per)
      .map((i) => `var ${r}_${i} = vec4<f32>(0.0);`)
      .join('\n  ');
    const load = range(per)
      .map((i) => {
        const g = `(lid + ${i * THREADS}u)`;
        const skip = (i + 1) * THREADS > groups ? `if (${g} < ${groups}u) ` : '';
        const gr = `${rowOrigin} + ${g} / ${C / 4}u`;
        const gc = `${colOrigin} + (${g} % ${C / 4}u) * 4u`;
        // one element of a scalar array, or of a vec4 array by element index
        const elem = (idx: string) => (vec ? `${X}[(${idx}) / 4u][(${idx}) % 4u]` : `${X}[${idx}]`);
        const scalar = range(4)
          .map((j) => `if (gr < ${rowsAll}u && gc + ${j}u < ${colsAll}u) { v[${j}] = ${conv(elem(`${base} + gr * ${colsAll}u + gc + ${j}u`), false)}; }`)
          .join(' ');
        const fast = vec ? `if (gr < ${rowsAll}u && gc + 3u < ${colsAll}u) { v = ${conv(`${X}[(${base} + gr * ${colsAll}u + gc) / 4u]`, true)}; } else { ${scalar} }` : scalar;
        return `${skip}{ let gr = ${gr}; let gc = ${gc}; var v = vec4<f32>(0.0); ${fast} ${r}_${i} = v; }`;
      })
      .join('\n    ');
    const store = range(per)
      .map((i) => {
        const g = `(lid + ${i * THREADS}u)`;
        const skip = (i + 1) * THREADS > groups ? `if (${g} < ${groups}u) ` : '';
        return `${skip}{ let s = (${g} / ${C / 4}u) * ${LD}u + (${g} % ${C / 4}u) * 4u; ${range(4)
          .map((j) => `${sh}[s + ${j}u] = f16(${r}_${i}[${j}]);`)
          .join(' ')} }`;
      })
      .join('\n    ');
    return { decl, load, store };
  };
  const la = loader('A', aRows, aCols, LDA, vecA);
  const lb = loader('B', bRows, bCols, LDB, vecB);
  const nTiles = cdiv(K, BK);

  // subgroup (sm, sn) owns rows sm·RT·16 + r·16 and columns sn·CT·16 + c·16 of the workgroup's tile
  const aOff = (r: number, kk: number) => (transA ? `${kk * LDA}u + sm * ${RT * 16}u + ${r * 16}u` : `(sm * ${RT * 16}u + ${r * 16}u) * ${LDA}u + ${kk}u`);
  const bOff = (c: number, kk: number) => (transB ? `(sn * ${CT * 16}u + ${c * 16}u) * ${LDB}u + ${kk}u` : `${kk * LDB}u + sn * ${CT * 16}u + ${c * 16}u`);
  const load = (type: string, arr: string, off: string, colMajor: boolean, ld: number) =>
    p.legacyMajorness
      ? `subgroupMatrixLoad<${type}>(&${arr}, ${off}, ${colMajor}, ${ld}u)`
      : `subgroupMatrixLoad<${type}, ${colMajor ? 'col_major' : 'row_major'}>(&${arr}, ${off}, ${ld}u)`;
  const mma = range(BK / 16)
    .map((ks) => {
      const kk = ks * 16;
      return [
        ...range(RT).map((r) => `let a${r} = ${load('subgroup_matrix_left<f16, 16, 16>', 'As', aOff(r, kk), transA, LDA)};`),
        ...range(CT).map((c) => `let b${c} = ${load('subgroup_matrix_right<f16, 16, 16>', 'Bs', bOff(c, kk), transB, LDB)};`),
        ...range(RT).flatMap((r) => range(CT).map((c) => `acc_${r}_${c} = subgroupMatrixMultiplyAccumulate(a${r}, b${c}, acc_${r}_${c});`)),
      ].join('\n      ');
    })
    .map((s) => `{\n      ${s}\n    }`)
    .join('\n    ');

  const cBase = batch > 1 ? `z * ${sC}u` : '0u';
  // lane l of a subgroup handles row l / 2 (for SG = 32; rows l·16/SG.. in general) of the 16×16 scratch
  const perLane = 256 / SG; // elements per lane: 8 (SG 32), 16 (SG 16), 32 (SG 8)
  const vecsPerLane = perLane / 4;
  const stores = range(RT)
    .flatMap((r) =>
      range(CT).map(
        (c) => `${p.legacyMajorness ? `subgroupMatrixStore(&Cs, sg * 256u, acc_${r}_${c}, false, 16u)` : `subgroupMatrixStore<row_major>(&Cs, sg * 256u, acc_${r}_${c}, 16u)`};
  workgroupBarrier();
  for (var q = 0u; q < ${vecsPerLane}u; q = q + 1u) {
    let e = lane * ${perLane}u + q * 4u;
    let m = m0 + sm * ${RT * 16}u + ${r * 16}u + e / 16u;
    let n = n0 + sn * ${CT * 16}u + ${c * 16}u + e % 16u;
    if (m < ${M}u && n < ${N}u) {
      let acc = vec4<f32>(Cs[sg * 256u + e], Cs[sg * 256u + e + 1u], Cs[sg * 256u + e + 2u], Cs[sg * 256u + e + 3u]);
      let ci = ${cBase} + m * ${N}u + n;
      ${epi.apply('acc')}
    }
  }
  workgroupBarrier();`,
      ),
    )
    .join('\n  ');

  const body = `${epi.helpers}
var<workgroup> As : array<f16, ${aRows * LDA}>;
var<workgroup> Bs : array<f16, ${bRows * LDB}>;
var<workgroup> Cs : array<f32, ${NSG * 256}>;

@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let sg = lid / ${SG}u;
  let lane = lid % ${SG}u;
  let sm = sg / ${WN}u;
  let sn = sg % ${WN}u;
  let n0 = wid.x * ${BN}u;
  let m0 = wid.y * ${BM}u;
  let z = wid.z;
  ${range(RT)
    .flatMap((r) => range(CT).map((c) => `var acc_${r}_${c} = subgroup_matrix_result<f32, 16, 16>();`))
    .join('\n  ')}
  ${la.decl}
  ${lb.decl}
  {
    let k0 = 0u;
    ${la.load}
    ${lb.load}
  }
  for (var t = 0u; t < ${nTiles}u; t = t + 1u) {
    workgroupBarrier();
    ${la.store}
    ${lb.store}
    workgroupBarrier();
    if (t + 1u < ${nTiles}u) {
      let k0 = (t + 1u) * ${BK}u;
      ${la.load}
      ${lb.load}
    }
    ${mma}
  }
  ${stores}
}`;
  return makeKernel({
    label: `matmul ${matmulLabel(pp).replace(' f16-rounded', ' f16')} sgmat [${BM}x${BN}x${BK}/${WM}x${WN}sg]`,
    bindings,
    types,
    body,
    enables: ['f16', 'subgroups', 'chromium_experimental_subgroup_matrix'],
    directives: ['diagnostic(off, chromium.subgroup_matrix_uniformity)'],
    workgroups: [cdiv(N, BN), cdiv(M, BM), batch],
    flops: 2 * M * N * K * batch,
    bytes: matmulBytes(pp),
  });
}
