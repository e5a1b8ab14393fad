/**
 * patchflow fused kernels for the webgpu backend: WGSL compute programs run through
 * tfjs-backend-webgpu's `runWebGPUProgram`, registered by the plugin (see backend.ts: `kernels`).
 *
 * PfBlockSparseMatMul / PfBlockSparseMatMulGrad (contract: @patchflow/tensor ops.ts). w [K,N] is cut
 * into b×b blocks; blockMask [K/b, N/b] says which are kept. Three tiled programs, each skipping
 * masked blocks with a branch that is uniform across the workgroup, so the work scales with density:
 *
 * - y = x @ (w⊙M)            one workgroup per (row tile of x × column tile inside column block j of
 *                            w); loops over the row blocks i of w, skipping those with mask[i,j] = 0.
 * - dx = dy @ (w⊙M)^T        the same program with w read transposed: one workgroup per (row tile ×
 *                            column tile inside row block i of w), looping over the column blocks j
 *                            with mask[i,j] != 0.
 * - dw = (x^T @ dy) ⊙ M      one workgroup per tile inside block (i,j) of dw, reducing over all M
 *                            rows; a masked block writes zeros and does nothing else.
 *
 * The mask entry is read by one invocation and broadcast with workgroupUniformLoad: WGSL's uniformity
 * analysis would reject barriers under a branch on a value loaded per invocation (tfjs hands the
 * workgroup id to user code through a private variable, which the analysis treats as non-uniform).
 * Tile shapes depend only on b (a compile-time constant in the shader); M, K, N come from the
 * shape uniforms tfjs passes, so one pipeline serves every shape with the same b.
 */
import { KERNELS, type tf } from '@patchflow/tensor';

type TensorInfo = tf.TensorInfo;

/** The part of tfjs-backend-webgpu's WebGPUProgram interface these programs fill in. */
export interface WebGpuProgramLike {
  variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[]; y?: number[]; z?: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  getUserCode(): string;
}

/** The part of tfjs-backend-webgpu's WebGPUBackend the kernels call. */
export interface WebGpuBackendLike {
  runWebGPUProgram(program: WebGpuProgramLike, inputs: TensorInfo[], outputDtype: tf.DataType): TensorInfo;
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: Float32Array): TensorInfo;
}

/** Invocations per workgroup the matmul programs aim for (tfjs's own matmuls use 64 too). */
const THREADS = 64;

function largestDivisorAtMost(n: number, cap: number): number {
  for (let d = Math.min(n, cap); d > 1; d--) if (n % d === 0) return d;
  return 1;
}

/** Widest vector (4, 2 or 1 lanes) whose width divides d. */
const widest = (d: number) => (d % 4 === 0 ? 4 : d % 2 === 0 ? 2 : 1);

/**
 * Tile shape of the x@w / dy@w^T program for block size b (exported for tests). A workgroup computes
 * tileM × tileN outputs (tileN divides b, so a tile never straddles two column blocks), each
 * invocation perM × perN of them (perM contiguous rows, perN contiguous columns, as vectors),
 * reducing tileK (divides b) at a time through workgroup memory.
 */
export function matMulTiles(b: number) {
  let tileN = 1;
  for (let d = Math.min(b, 64); d >= 1; d--) {
    if (b % d === 0 && d / widest(d) <= 16) {
      tileN = d;
      break;
    }
  }
  const perN = widest(tileN);
  const threadsN = tileN / perN;
  const threadsM = Math.max(1, Math.floor(THREADS / threadsN));
  const rowsFit = Math.floor(THREADS / threadsM);
  const perM = rowsFit >= 4 ? 4 : rowsFit >= 2 ? 2 : 1;
  const tileM = threadsM * perM;
  const tileK = largestDivisorAtMost(b, 32);
  return { tileM, tileN, tileK, perM, perN, threadsM, threadsN };
}

/**
 * Tile shape of the dw program for block size b (exported for tests): tile × tile outputs per
 * workgroup (tile divides b), per × per per invocation, chunkM rows of x and dy at a time.
 */
export function gradWTiles(b: number) {
  let tile = 1;
  for (let d = Math.min(b, 32); d >= 1; d--) {
    if (b % d === 0 && d / widest(d) <= 8) {
      tile = d;
      break;
    }
  }
  const per = [1, 2, 4].find((p) => tile % p === 0 && tile / p <= 8)!;
  return { tile, per, threads: tile / per, chunkM: 32 };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
/** WGSL type of `lanes` f32s. */
const vec = (lanes: number) => (lanes === 1 ? 'f32' : `vec${lanes}<f32>`);
/** Component i of a value of `lanes` lanes. */
const lane = (expr: string, i: number, lanes: number) => (lanes === 1 ? expr : `${expr}[${i}]`);
/** Stores scalar element `idx` of a workgroup array of `lanes`-lane vectors. */
const store = (arr: string, idx: string, value: string, lanes: number) =>
  lanes === 1 ? `${arr}[${idx}] = ${value};` : `{ let si = ${idx}; ${arr}[si / ${lanes}][si % ${lanes}] = ${value}; }`;

/**
 * out[m, o] = sum_r A[m, r] * W'(r, o) over the reduction blocks kept by the mask, where
 * W'(r, o) = W[r, o] (forward: A = x, out = y) or W[o, r] (transposeW, dx: A = dy, out = dx).
 */
export class BlockSparseMatMulProgram implements WebGpuProgramLike {
  variableNames = ['A', 'W', 'Mask'];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [1], y: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  private readonly t: ReturnType<typeof matMulTiles>;

  constructor(
    rows: number,
    outCols: number,
    private readonly blockSize: number,
    private readonly transposeW: boolean,
    private readonly bias = false,
  ) {
    if (bias) this.variableNames = ['A', 'W', 'Mask', 'Bias'];
    this.t = matMulTiles(blockSize);
    this.outputShape = [rows, outCols];
    this.workgroupSize = [this.t.threadsN, this.t.threadsM, 1];
    this.dispatch = [outCols / this.t.tileN, Math.ceil(rows / this.t.tileM), 1];
    this.shaderKey = `pfBlockSparseMatMul_${transposeW ? 'dx' : 'y'}_${blockSize}${bias ? '_bias' : ''}`;
  }

  getUserCode(): string {
    const b = this.blockSize;
    const { tileM, tileN, tileK, perM, perN, threadsM, threadsN } = this.t;
    const nt = threadsM * threadsN;
    // As: the A tile transposed, [tileK][tileM], perM rows per vector; Bs: [tileK][tileN], perN
    // columns per vector. Invocation (tx, ty) owns rows ty*perM.. and columns tx*perN.. of the tile.
    const loadB = this.transposeW
      ? `let c = e / ${tileK};
            let kk = e % ${tileK};
            ${store('Bs', `kk * ${tileN} + c`, 'W[(col0 + c) * wCols + rBase + kk]', perN)}`
      : `${store('Bs', 'e', `W[(rBase + e / ${tileN}) * wCols + col0 + e % ${tileN}]`, perN)}`;
    return `
  var<workgroup> As : array<${vec(perM)}, ${tileK * threadsM}>;
  var<workgroup> Bs : array<${vec(perN)}, ${tileK * threadsN}>;
  var<workgroup> keepFlag : array<i32, 2>;

  fn main() {
    let tx = i32(localId.x);
    let ty = i32(localId.y);
    let lidx = i32(localIndex);
    let col0 = i32(workgroupId.x) * ${tileN};
    let ob = col0 / ${b};
    let row0 = i32(workgroupId.y) * ${tileM};
    let M = uniforms.aShape.x;
    let R = uniforms.aShape.y;
    let nOut = uniforms.outShape.y;
    let wCols = uniforms.wShape.y;
    let maskCols = uniforms.maskShape.y;
    let numRB = uniforms.maskShape.${this.transposeW ? 'y' : 'x'};
    ${range(perM).map((r) => `var acc_${r} = ${vec(perN)}(0.0);`).join('\n    ')}
    for (var rb = 0; rb < numRB; rb = rb + 1) {
      // Double-buffered: an invocation still reading slot rb%2 cannot be overtaken by the write of
      // iteration rb+2, which comes after iteration rb+1's barrier.
      let slot = rb % 2;
      if (lidx == 0) {
        keepFlag[slot] = select(0, 1, Mask[${this.transposeW ? 'ob * maskCols + rb' : 'rb * maskCols + ob'}] != 0);
      }
      if (workgroupUniformLoad(&keepFlag[slot]) != 0) {
        for (var r0 = 0; r0 < ${b}; r0 = r0 + ${tileK}) {
          let rBase = rb * ${b} + r0;
          for (var e = lidx; e < ${tileM * tileK}; e = e + ${nt}) {
            let mm = e / ${tileK};
            let kk = e % ${tileK};
            var v = 0.0;
            if (row0 + mm < M) {
              v = A[(row0 + mm) * R + rBase + kk];
            }
            ${store('As', `kk * ${tileM} + mm`, 'v', perM)}
          }
          for (var e = lidx; e < ${tileK * tileN}; e = e + ${nt}) {
            ${loadB}
          }
          workgroupBarrier();
          for (var kk = 0; kk < ${tileK}; kk = kk + 1) {
            let bv = Bs[kk * ${threadsN} + tx];
            let av = As[kk * ${threadsM} + ty];
            ${range(perM).map((r) => `acc_${r} = fma(${vec(perN)}(${lane('av', r, perM)}), bv, acc_${r});`).join('\n            ')}
          }
          workgroupBarrier();
        }
      }
    }
    ${range(perM)
      .map(
        (r) => `if (row0 + ty * ${perM} + ${r} < M) {
      let base = (row0 + ty * ${perM} + ${r}) * nOut + col0 + tx * ${perN};
      ${range(perN).map((c) => `setOutputAtIndex(base + ${c}, ${lane(`acc_${r}`, c, perN)}${this.bias ? ` + Bias[col0 + tx * ${perN} + ${c}]` : ''});`).join(' ')}
    }`,
      )
      .join('\n    ')}
  }
`;
  }
}

/** dw[k, n] = sum_m X[m, k] * Dy[m, n] inside kept blocks, exact zeros elsewhere. */
export class BlockSparseGradWProgram implements WebGpuProgramLike {
  variableNames = ['X', 'Dy', 'Mask'];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [1], y: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  private readonly t: ReturnType<typeof gradWTiles>;

  constructor(
    k: number,
    n: number,
    private readonly blockSize: number,
  ) {
    this.t = gradWTiles(blockSize);
    this.outputShape = [k, n];
    this.workgroupSize = [this.t.threads, this.t.threads, 1];
    this.dispatch = [n / this.t.tile, k / this.t.tile, 1];
    this.shaderKey = `pfBlockSparseMatMulGradW_${blockSize}`;
  }

  getUserCode(): string {
    const b = this.blockSize;
    const { tile, per, threads, chunkM } = this.t;
    const nt = threads * threads;
    // Xs, Ds: [chunkM][tile] slices of x and dy; invocation (tx, ty) owns dw rows ty*per.. and
    // columns tx*per.. of the tile.
    return `
  var<workgroup> Xs : array<${vec(per)}, ${chunkM * threads}>;
  var<workgroup> Ds : array<${vec(per)}, ${chunkM * threads}>;
  var<workgroup> keepFlag : i32;

  fn main() {
    let tx = i32(localId.x);
    let ty = i32(localId.y);
    let lidx = i32(localIndex);
    let n0 = i32(workgroupId.x) * ${tile};
    let k0 = i32(workgroupId.y) * ${tile};
    let M = uniforms.xShape.x;
    let K = uniforms.xShape.y;
    let N = uniforms.dyShape.y;
    if (lidx == 0) {
      keepFlag = select(0, 1, Mask[(k0 / ${b}) * uniforms.maskShape.y + n0 / ${b}] != 0);
    }
    ${range(per).map((r) => `var acc_${r} = ${vec(per)}(0.0);`).join('\n    ')}
    // A masked block skips the reduction and writes its zeros.
    if (workgroupUniformLoad(&keepFlag) != 0) {
      for (var m0 = 0; m0 < M; m0 = m0 + ${chunkM}) {
        for (var e = lidx; e < ${chunkM * tile}; e = e + ${nt}) {
          let gm = m0 + e / ${tile};
          let c = e % ${tile};
          var xv = 0.0;
          var dv = 0.0;
          if (gm < M) {
            xv = X[gm * K + k0 + c];
            dv = Dy[gm * N + n0 + c];
          }
          ${store('Xs', 'e', 'xv', per)}
          ${store('Ds', 'e', 'dv', per)}
        }
        workgroupBarrier();
        for (var mm = 0; mm < ${chunkM}; mm = mm + 1) {
          let dvec = Ds[mm * ${threads} + tx];
          let xvec = Xs[mm * ${threads} + ty];
          ${range(per).map((r) => `acc_${r} = fma(${vec(per)}(${lane('xvec', r, per)}), dvec, acc_${r});`).join('\n          ')}
        }
        workgroupBarrier();
      }
    }
    ${range(per)
      .map(
        (r) => `{
      let base = (k0 + ty * ${per} + ${r}) * N + n0 + tx * ${per};
      ${range(per).map((c) => `setOutputAtIndex(base + ${c}, ${lane(`acc_${r}`, c, per)});`).join(' ')}
    }`,
      )
      .join('\n    ')}
  }
`;
  }
}

type KernelArgs = { inputs: Record<string, TensorInfo | undefined>; backend: unknown; attrs?: Record<string, unknown> };

function input(args: KernelArgs, name: string, kernel: string): TensorInfo {
  const t = args.inputs[name];
  if (!t) throw new Error(`${kernel}: missing input ${name}`);
  return t;
}

function checkShapes(kernel: string, x: TensorInfo, w: TensorInfo, mask: TensorInfo, b: number, dy?: TensorInfo): [number, number, number] {
  const shape = (t: TensorInfo) => `[${t.shape.join(',')}]`;
  if (x.shape.length !== 2 || w.shape.length !== 2 || mask.shape.length !== 2) {
    throw new Error(`${kernel}: x, w and blockMask must be 2-D (got ${shape(x)}, ${shape(w)}, ${shape(mask)})`);
  }
  const [m, k] = x.shape as [number, number];
  const [kw, n] = w.shape as [number, number];
  if (kw !== k) throw new Error(`${kernel}: x is ${shape(x)} but w is ${shape(w)}`);
  if (!(Number.isInteger(b) && b > 0) || k % b || n % b) throw new Error(`${kernel}: block size ${b} does not divide w's shape ${shape(w)}`);
  if (mask.shape[0] !== k / b || mask.shape[1] !== n / b) throw new Error(`${kernel}: blockMask is ${shape(mask)}, expected [${k / b},${n / b}]`);
  for (const [what, t] of [['x', x], ['w', w], ['dy', dy]] as const) {
    if (t && t.dtype !== 'float32') throw new Error(`${kernel}: ${what} must be float32 (got ${t.dtype})`);
  }
  if (mask.dtype === 'complex64' || mask.dtype === 'string') throw new Error(`${kernel}: blockMask must be int32 (got ${mask.dtype})`);
  if (dy && (dy.shape.length !== 2 || dy.shape[0] !== m || dy.shape[1] !== n)) {
    throw new Error(`${kernel}: dy is ${shape(dy)}, expected [${m},${n}]`);
  }
  return [m, k, n];
}

/** A float32 zero tensor (for empty reductions: a binding of an empty buffer is invalid in WebGPU). */
function zeros(backend: WebGpuBackendLike, shape: number[]): TensorInfo {
  return backend.makeTensorInfo(shape, 'float32', new Float32Array(shape.reduce((a, d) => a * d, 1)));
}

function blockSparseMatMul(args: KernelArgs): TensorInfo {
  const kernel = KERNELS.blockSparseMatMul;
  const backend = args.backend as WebGpuBackendLike;
  const x = input(args, 'x', kernel);
  const w = input(args, 'w', kernel);
  const mask = input(args, 'blockMask', kernel);
  const b = Number(args.attrs?.blockSize);
  const [m, k, n] = checkShapes(kernel, x, w, mask, b);
  const bias = args.inputs.bias;
  if (bias && (bias.dtype !== 'float32' || bias.shape.length !== 1 || bias.shape[0] !== n)) {
    throw new Error(`${kernel}: bias must be float32 [${n}] (got ${bias.dtype} [${bias.shape.join(',')}])`);
  }
  if (m === 0 || n === 0) return zeros(backend, [m, n]);
  if (k === 0) {
    if (bias) throw new Error(`${kernel}: K = 0 with a bias is not supported`);
    return zeros(backend, [m, n]);
  }
  return backend.runWebGPUProgram(new BlockSparseMatMulProgram(m, n, b, false, !!bias), bias ? [x, w, mask, bias] : [x, w, mask], 'float32');
}

function blockSparseMatMulGrad(args: KernelArgs): TensorInfo[] {
  const kernel = KERNELS.blockSparseMatMulGrad;
  const backend = args.backend as WebGpuBackendLike;
  const x = input(args, 'x', kernel);
  const w = input(args, 'w', kernel);
  const mask = input(args, 'blockMask', kernel);
  const dy = input(args, 'dy', kernel);
  const b = Number(args.attrs?.blockSize);
  const [m, k, n] = checkShapes(kernel, x, w, mask, b, dy);
  if (m === 0 || k === 0 || n === 0) return [zeros(backend, [m, k]), zeros(backend, [k, n])];
  const dx = backend.runWebGPUProgram(new BlockSparseMatMulProgram(m, k, b, true), [dy, w, mask], 'float32');
  const dw = backend.runWebGPUProgram(new BlockSparseGradWProgram(k, n, b), [x, dy, mask], 'float32');
  return [dx, dw];
}

/** The fused kernels of the webgpu backend (registered on 'webgpu' by the registry). */
export function webgpuKernels(): { kernelName: string; kernelFunc: tf.KernelFunc }[] {
  return [
    { kernelName: KERNELS.blockSparseMatMul, kernelFunc: blockSparseMatMul as unknown as tf.KernelFunc },
    { kernelName: KERNELS.blockSparseMatMulGrad, kernelFunc: blockSparseMatMulGrad as unknown as tf.KernelFunc },
  ];
}
