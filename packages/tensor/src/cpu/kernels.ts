/**
 * KernelSpecs that route the cpu backend's hot kernels to the native addon. Each wrapper reads its
 * inputs straight from MathBackendCPU's storage, lets the addon write into a fresh output array,
 * and hands that array to the backend (no copies). Cases the addon does not cover (other dtypes,
 * exotic broadcasting, prelu) go to the stock tfjs-cpu kernel.
 */
import { Buffer } from 'node:buffer';
import * as tf from '@tensorflow/tfjs-core';
import type { KernelSpec } from '../registry.js';
import type { NativeAddon } from './native.js';
import { KERNELS } from '../ops.js';

type Values = tf.backend_util.BackendValues;
interface CpuBackendLike {
  data: { get(dataId: object): { values?: Values } };
  readSync(dataId: object): Values;
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: Values): tf.TensorInfo;
}

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

function f32(b: CpuBackendLike, t: tf.TensorInfo): Float32Array {
  const v = b.data.get(t.dataId).values ?? b.readSync(t.dataId);
  return v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number>);
}

function i32(b: CpuBackendLike, t: tf.TensorInfo): Int32Array {
  const v = b.data.get(t.dataId).values ?? b.readSync(t.dataId);
  return v instanceof Int32Array ? v : Int32Array.from(v as ArrayLike<number>);
}

/**
 * A Float32Array of n elements that is NOT zero-filled: its own ArrayBuffer of exactly 4n bytes
 * (Buffer.allocUnsafeSlow, never a pool slice). Only for native kernels that write every element of
 * their output; skips the zero fill of `new Float32Array(n)` (~0.4 ms for 8 MB).
 */
function uninitF32(n: number): Float32Array {
  const buf = Buffer.allocUnsafeSlow(n * 4);
  return new Float32Array(buf.buffer, buf.byteOffset, n);
}

/** Calls the stock tfjs-cpu kernel of the same name (the fallback). */
function stock(name: string, args: Parameters<tf.KernelFunc>[0]) {
  const k = tf.getKernel(name, 'cpu');
  if (!k) throw new Error(`patchflow cpu: no stock kernel ${name}`);
  return k.kernelFunc(args);
}

const ACT: Record<string, number> = { linear: 0, relu: 1, relu6: 2, leakyrelu: 3, elu: 4, sigmoid: 5 };

function matMulKernel(n: NativeAddon, name: string): KernelSpec {
  return {
    kernelName: name,
    kernelFunc: (args) => {
      const { inputs, attrs } = args;
      const backend = args.backend as unknown as CpuBackendLike;
      const a = inputs.a as tf.TensorInfo;
      const b = inputs.b as tf.TensorInfo;
      const bias = inputs.bias as tf.TensorInfo | undefined;
      const transposeA = !!attrs?.transposeA;
      const transposeB = !!attrs?.transposeB;
      const activation = (attrs?.activation as string | undefined) ?? 'linear';
      const act = ACT[activation];
      const ra = a.shape.length;
      const rb = b.shape.length;
      if (a.dtype !== 'float32' || b.dtype !== 'float32' || ra < 2 || rb < 2 || act === undefined || inputs.preluActivationWeights) {
        return stock(name, args);
      }
      const m = transposeA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
      const k = transposeA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
      const kb = transposeB ? b.shape[rb - 1]! : b.shape[rb - 2]!;
      const nn = transposeB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
      const batchA = size(a.shape.slice(0, -2));
      const batchB = size(b.shape.slice(0, -2));
      if (k !== kb || batchA === 0 || batchB === 0 || (batchA !== batchB && batchA !== 1 && batchB !== 1)) return stock(name, args);
      const outer = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
      const batch = Math.max(batchA, batchB);
      if (size(outer) !== batch) return stock(name, args);
      let biasVals: Float32Array | null = null;
      if (bias) {
        // only a bias over the last axis ([N] or [1, ..., 1, N]); anything else broadcasts differently
        if (bias.dtype !== 'float32' || size(bias.shape) !== nn || bias.shape[bias.shape.length - 1] !== nn) return stock(name, args);
        biasVals = f32(backend, bias);
      }
      const out = new Float32Array(batch * m * nn);
      const alpha = (attrs?.leakyreluAlpha as number | undefined) ?? 0.2;
      n.matmul(f32(backend, a), f32(backend, b), out, batch, batchA, batchB, m, nn, k, +transposeA, +transposeB, biasVals, act, alpha);
      return backend.makeTensorInfo([...outer, m, nn], 'float32', out);
    },
  };
}

function softmaxKernel(n: NativeAddon): KernelSpec {
  return {
    kernelName: 'Softmax',
    kernelFunc: (args) => {
      const backend = args.backend as unknown as CpuBackendLike;
      const x = args.inputs.logits as tf.TensorInfo;
      const dim = (args.attrs?.dim as number | undefined) ?? -1;
      const r = x.shape.length;
      if (x.dtype !== 'float32' || r < 1 || (dim !== -1 && dim !== r - 1)) return stock('Softmax', args);
      const c = x.shape[r - 1]!;
      const out = new Float32Array(size(x.shape));
      if (c > 0) n.softmax(f32(backend, x), out, size(x.shape) / c, c);
      return backend.makeTensorInfo([...x.shape], 'float32', out);
    },
  };
}

function segmentSumKernel(n: NativeAddon): KernelSpec {
  return {
    kernelName: 'UnsortedSegmentSum',
    kernelFunc: (args) => {
      const backend = args.backend as unknown as CpuBackendLike;
      const x = args.inputs.x as tf.TensorInfo;
      const ids = args.inputs.segmentIds as tf.TensorInfo;
      const numSegments = args.attrs!.numSegments as number;
      const r = ids.shape.length;
      if (x.dtype !== 'float32' || ids.dtype !== 'int32' || r < 1 || ids.shape.some((d, i) => d !== x.shape[i])) {
        return stock('UnsortedSegmentSum', args);
      }
      const s = size(ids.shape);
      const innerShape = x.shape.slice(r);
      const inner = size(innerShape);
      const out = new Float32Array(numSegments * inner);
      n.segmentSum(f32(backend, x), i32(backend, ids), s, inner, numSegments, out);
      return backend.makeTensorInfo([numSegments, ...innerShape], 'float32', out);
    },
  };
}

function transposeKernel(n: NativeAddon): KernelSpec {
  return {
    kernelName: 'Transpose',
    kernelFunc: (args) => {
      const backend = args.backend as unknown as CpuBackendLike;
      const x = args.inputs.x as tf.TensorInfo;
      const perm = args.attrs!.perm as number[];
      const r = x.shape.length;
      if ((x.dtype !== 'float32' && x.dtype !== 'int32') || r < 1 || r > 8 || perm.length !== r) return stock('Transpose', args);
      const vals = backend.data.get(x.dataId).values ?? backend.readSync(x.dataId);
      const out = x.dtype === 'float32' ? new Float32Array(size(x.shape)) : new Int32Array(size(x.shape));
      if (!(vals instanceof Float32Array || vals instanceof Int32Array)) return stock('Transpose', args);
      n.transpose(vals, out, [...x.shape], perm);
      return backend.makeTensorInfo(perm.map((p) => x.shape[p]!), x.dtype, out);
    },
  };
}

function sumKernel(n: NativeAddon): KernelSpec {
  return {
    kernelName: 'Sum',
    kernelFunc: (args) => {
      const backend = args.backend as unknown as CpuBackendLike;
      const x = args.inputs.x as tf.TensorInfo;
      const r = x.shape.length;
      if (x.dtype !== 'float32' || r === 0) return stock('Sum', args);
      const axes = [...new Set(tf.util.parseAxisParam(args.attrs!.axis as number | number[], x.shape))].sort((a, b) => a - b);
      // a contiguous block of axes: x is [outer, red, inner]
      if (axes.length === 0 || axes[axes.length - 1]! - axes[0]! !== axes.length - 1) return stock('Sum', args);
      const outer = size(x.shape.slice(0, axes[0]));
      const red = size(axes.map((a) => x.shape[a]!));
      const inner = size(x.shape.slice(axes[axes.length - 1]! + 1));
      const out = new Float32Array(outer * inner);
      n.sum(f32(backend, x), outer, red, inner, out);
      const shape = args.attrs!.keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
      return backend.makeTensorInfo(shape, 'float32', out);
    },
  };
}

/** SplitV along any axis: x is [outer, A, inner]; output k gets the contiguous runs [outer, a_k, inner]. */
function splitKernel(n: NativeAddon): KernelSpec {
  return {
    kernelName: 'SplitV',
    kernelFunc: (args) => {
      const backend = args.backend as unknown as CpuBackendLike;
      const x = args.inputs.x as tf.TensorInfo;
      if (x.dtype !== 'float32' && x.dtype !== 'int32') return stock('SplitV', args);
      const axis = tf.util.parseAxisParam(args.attrs!.axis as number, x.shape)[0]!;
      const sizes = tf.backend_util.prepareSplitSize(x, args.attrs!.numOrSizeSplits as number | number[], axis);
      const vals = backend.data.get(x.dataId).values ?? backend.readSync(x.dataId);
      if (!(vals instanceof Float32Array || vals instanceof Int32Array)) return stock('SplitV', args);
      const outer = size(x.shape.slice(0, axis));
      const inner = size(x.shape.slice(axis + 1));
      const rowIn = x.shape[axis]! * inner;
      let off = 0;
      return sizes.map((s) => {
        const len = s * inner;
        const out = vals instanceof Float32Array ? new Float32Array(outer * len) : new Int32Array(outer * len);
        if (outer === 1) out.set(vals.subarray(off, off + len));
        else n.copyRows(vals, off, rowIn, out, 0, len, outer, len);
        off += len;
        const shape = [...x.shape];
        shape[axis] = s;
        return backend.makeTensorInfo(shape, x.dtype, out);
      });
    },
  };
}

/**
 * Add/Sub/Multiply/RealDiv on float32 when one operand's shape is a suffix of the other's (after
 * dropping leading 1s): same shape, scalar, bias row. Stock tfjs computes an index per element for
 * any broadcast (the optimizer's `m * 0.9` included); other broadcasts still go there.
 */
function binaryKernel(n: NativeAddon, name: string, op: number): KernelSpec {
  const strip = (s: readonly number[]) => {
    let i = 0;
    while (i < s.length && s[i] === 1) i++;
    return s.slice(i);
  };
  const isSuffix = (small: readonly number[], big: readonly number[]) => {
    const s = strip(small);
    return s.length <= big.length && s.every((d, i) => d === big[big.length - s.length + i]);
  };
  return {
    kernelName: name,
    kernelFunc: (args) => {
      const backend = args.backend as unknown as CpuBackendLike;
      const a = args.inputs.a as tf.TensorInfo;
      const b = args.inputs.b as tf.TensorInfo;
      if (a.dtype !== 'float32' || b.dtype !== 'float32') return stock(name, args);
      const na = size(a.shape);
      const nb = size(b.shape);
      const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
      const nOut = size(outShape);
      if (nOut === 0 || na === 0 || nb === 0) return stock(name, args);
      let rev: boolean;
      if (na === nOut && isSuffix(b.shape, a.shape)) rev = false;
      else if (nb === nOut && isSuffix(a.shape, b.shape)) rev = true;
      else return stock(name, args);
      const out = new Float32Array(nOut);
      const [big, small] = rev ? [b, a] : [a, b];
      n.binary(op, +rev, f32(backend, big), nOut, f32(backend, small), size(small.shape), out);
      return backend.makeTensorInfo(outShape, 'float32', out);
    },
  };
}

/** Concat (the gradient of split) along any axis: per outer index, one contiguous run per input. */
function concatKernel(n: NativeAddon): KernelSpec {
  return {
    kernelName: 'Concat',
    kernelFunc: (args) => {
      const backend = args.backend as unknown as CpuBackendLike;
      const xs = Object.values(args.inputs) as tf.TensorInfo[];
      const dtype = xs[0]?.dtype;
      if (!xs.length || (dtype !== 'float32' && dtype !== 'int32') || xs.some((x) => x.dtype !== dtype || x.shape.length !== xs[0]!.shape.length)) {
        return stock('Concat', args);
      }
      const axis = tf.util.parseAxisParam(args.attrs!.axis as number, xs[0]!.shape)[0]!;
      const outShape = tf.backend_util.computeOutShape(xs.map((x) => x.shape), axis);
      const outer = size(outShape.slice(0, axis));
      const inner = size(outShape.slice(axis + 1));
      const rowOut = outShape[axis]! * inner;
      const out = dtype === 'float32' ? new Float32Array(outer * rowOut) : new Int32Array(outer * rowOut);
      let off = 0;
      for (const x of xs) {
        const len = x.shape[axis]! * inner;
        if (len === 0) continue;
        const v = backend.data.get(x.dataId).values ?? backend.readSync(x.dataId);
        if (!(v instanceof Float32Array || v instanceof Int32Array)) return stock('Concat', args);
        if (outer === 1) out.set(v.subarray(0, len), off);
        else n.copyRows(v, 0, len, out, off, rowOut, outer, len);
        off += len;
      }
      return backend.makeTensorInfo(outShape, dtype, out);
    },
  };
}

/** GatherV2 on axis 0 (the embedding lookup): one row copy per index. Plain JS. */
function gatherKernel(): KernelSpec {
  return {
    kernelName: 'GatherV2',
    kernelFunc: (args) => {
      const backend = args.backend as unknown as CpuBackendLike;
      const x = args.inputs.x as tf.TensorInfo;
      const indices = args.inputs.indices as tf.TensorInfo;
      const batchDims = (args.attrs?.batchDims as number | undefined) ?? 0;
      if ((x.dtype !== 'float32' && x.dtype !== 'int32') || indices.dtype !== 'int32' || batchDims !== 0 || x.shape.length < 1) return stock('GatherV2', args);
      const axis = tf.util.parseAxisParam(args.attrs!.axis as number, x.shape)[0]!;
      if (axis !== 0) return stock('GatherV2', args);
      const v = backend.data.get(x.dataId).values ?? backend.readSync(x.dataId);
      if (!(v instanceof Float32Array || v instanceof Int32Array)) return stock('GatherV2', args);
      const ids = i32(backend, indices);
      const rows = x.shape[0]!;
      const inner = size(x.shape.slice(1));
      const out = x.dtype === 'float32' ? new Float32Array(ids.length * inner) : new Int32Array(ids.length * inner);
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i]!;
        if (id < 0 || id >= rows) throw new Error(`GatherV2: the index value ${id} is not in [0, ${rows - 1}]`);
        out.set(v.subarray(id * inner, (id + 1) * inner), i * inner);
      }
      return backend.makeTensorInfo([...indices.shape, ...x.shape.slice(1)], x.dtype, out);
    },
  };
}

/**
 * Checks PfBlockSparseMatMul(Grad)'s inputs: float32 x [M,K], w [K,N] (and dy [M,N]), int32
 * blockMask [K/b, N/b], integer blockSize b >= 1 dividing K and N. Returns [M, K, N, b].
 */
function blockSparseDims(kernel: string, x: tf.TensorInfo, w: tf.TensorInfo, mask: tf.TensorInfo, b: unknown, dy?: tf.TensorInfo): [number, number, number, number] {
  const s = (t: tf.TensorInfo) => `[${t.shape.join(',')}]`;
  if (!x || !w || !mask) throw new Error(`${kernel}: inputs x, w and blockMask are required`);
  if (x.dtype !== 'float32' || w.dtype !== 'float32') throw new Error(`${kernel}: x and w must be float32 (got ${x.dtype}, ${w.dtype})`);
  if (mask.dtype !== 'int32') throw new Error(`${kernel}: blockMask must be int32 (got ${mask.dtype})`);
  if (x.shape.length !== 2 || w.shape.length !== 2 || mask.shape.length !== 2) {
    throw new Error(`${kernel}: x, w and blockMask must be 2-D (got ${s(x)}, ${s(w)}, ${s(mask)})`);
  }
  const [m, k] = x.shape as [number, number];
  const [kw, nn] = w.shape as [number, number];
  if (k !== kw) throw new Error(`${kernel}: x ${s(x)} and w ${s(w)} do not chain`);
  if (typeof b !== 'number' || !Number.isInteger(b) || b < 1 || k % b !== 0 || nn % b !== 0) {
    throw new Error(`${kernel}: blockSize ${String(b)} must be a positive integer dividing w's shape ${s(w)}`);
  }
  if (mask.shape[0] !== k / b || mask.shape[1] !== nn / b) {
    throw new Error(`${kernel}: blockMask is ${s(mask)} but w ${s(w)} in ${b}×${b} blocks needs [${k / b},${nn / b}]`);
  }
  if (dy) {
    if (dy.dtype !== 'float32') throw new Error(`${kernel}: dy must be float32 (got ${dy.dtype})`);
    if (dy.shape.length !== 2 || dy.shape[0] !== m || dy.shape[1] !== nn) throw new Error(`${kernel}: dy is ${s(dy)} but y is [${m},${nn}]`);
  }
  return [m, k, nn, b];
}

const be = (args: Parameters<tf.KernelFunc>[0]) => args.backend as unknown as CpuBackendLike;
const T = (x: unknown) => x as tf.TensorInfo;

function blockSparseKernels(n: NativeAddon): KernelSpec[] {
  return [
    {
      kernelName: KERNELS.blockSparseMatMul,
      kernelFunc: (args) => {
        const b = be(args);
        const { x, w, blockMask, bias } = args.inputs;
        const [m, k, nn, bs] = blockSparseDims(KERNELS.blockSparseMatMul, T(x), T(w), T(blockMask), args.attrs?.blockSize);
        if (bias && (T(bias).dtype !== 'float32' || size(T(bias).shape) !== nn)) throw new Error(`PfBlockSparseMatMul: bias must be float32 [${nn}], got ${T(bias).dtype} [${T(bias).shape}]`);
        const y = uninitF32(m * nn); // the kernel writes every element (zeros where no block is kept)
        n.blockSparseMatMul(f32(b, T(x)), f32(b, T(w)), i32(b, T(blockMask)), y, m, k, nn, bs, bias ? f32(b, T(bias)) : null);
        return b.makeTensorInfo([m, nn], 'float32', y);
      },
    },
    {
      kernelName: KERNELS.blockSparseMatMulGrad,
      kernelFunc: (args) => {
        const b = be(args);
        const { x, w, blockMask, dy } = args.inputs;
        if (!dy) throw new Error('PfBlockSparseMatMulGrad: input dy is required');
        const [m, k, nn, bs] = blockSparseDims(KERNELS.blockSparseMatMulGrad, T(x), T(w), T(blockMask), args.attrs?.blockSize, T(dy));
        const dx = uninitF32(m * k); // both written in full: zeros where no block is kept / outside the mask
        const dw = uninitF32(k * nn);
        n.blockSparseMatMulGrad(f32(b, T(x)), f32(b, T(w)), i32(b, T(blockMask)), f32(b, T(dy)), dx, dw, m, k, nn, bs);
        return [b.makeTensorInfo([m, k], 'float32', dx), b.makeTensorInfo([k, nn], 'float32', dw)];
      },
    },
  ];
}

/** PfAdamW: one pass over w, g, m, v (see ops.ts adamwUpdate). */
function adamwKernel(n: NativeAddon): KernelSpec {
  return {
    kernelName: KERNELS.adamw,
    kernelFunc: (args) => {
      const b = be(args);
      const [w, g, m, v, scale] = (['w', 'g', 'm', 'v', 'scale'] as const).map((k) => T(args.inputs[k]));
      const count = size(w!.shape);
      for (const t of [g!, m!, v!]) {
        if (t.dtype !== 'float32' || size(t.shape) !== count) throw new Error(`PfAdamW: g, m and v must be float32 of w's shape [${w!.shape}]`);
      }
      const a = args.attrs as Record<string, number>;
      const wo = uninitF32(count);
      const mo = uninitF32(count);
      const vo = uninitF32(count);
      n.adamw(f32(b, w!), f32(b, g!), f32(b, m!), f32(b, v!), count, f32(b, scale!)[0]!, a.beta1!, a.beta2!, a.eps!, a.decay!, a.stepSize!, a.bc2!, wo, mo, vo);
      return [w!, m!, v!].map((t, i) => b.makeTensorInfo([...t.shape], 'float32', [wo, mo, vo][i]));
    },
  };
}

function fusedKernels(n: NativeAddon): KernelSpec[] {
  return [
    {
      kernelName: KERNELS.gelu,
      kernelFunc: (args) => {
        const b = be(args);
        const x = T(args.inputs.x);
        const y = new Float32Array(size(x.shape));
        n.gelu(f32(b, x), y, y.length);
        return b.makeTensorInfo([...x.shape], 'float32', y);
      },
    },
    {
      kernelName: KERNELS.geluGrad,
      kernelFunc: (args) => {
        const b = be(args);
        const x = T(args.inputs.x);
        const dy = T(args.inputs.dy);
        const dx = new Float32Array(size(x.shape));
        n.geluGrad(f32(b, x), f32(b, dy), dx, dx.length);
        return b.makeTensorInfo([...x.shape], 'float32', dx);
      },
    },
    {
      kernelName: KERNELS.layerNorm,
      kernelFunc: (args) => {
        const b = be(args);
        const x = T(args.inputs.x);
        const c = x.shape[x.shape.length - 1]!;
        const rows = size(x.shape.slice(0, -1));
        const y = new Float32Array(rows * c);
        const mean = new Float32Array(rows);
        const rstd = new Float32Array(rows);
        const eps = (args.attrs?.eps as number | undefined) ?? 1e-5;
        n.layerNorm(f32(b, x), f32(b, T(args.inputs.gamma)), f32(b, T(args.inputs.beta)), rows, c, eps, y, mean, rstd);
        const stat = x.shape.slice(0, -1);
        return [b.makeTensorInfo([...x.shape], 'float32', y), b.makeTensorInfo(stat, 'float32', mean), b.makeTensorInfo(stat, 'float32', rstd)];
      },
    },
    {
      kernelName: KERNELS.layerNormGrad,
      kernelFunc: (args) => {
        const b = be(args);
        const x = T(args.inputs.x);
        const gamma = T(args.inputs.gamma);
        const c = x.shape[x.shape.length - 1]!;
        const rows = size(x.shape.slice(0, -1));
        const dx = new Float32Array(rows * c);
        const dg = new Float32Array(c);
        const db = new Float32Array(c);
        n.layerNormGrad(f32(b, T(args.inputs.dy)), f32(b, x), f32(b, gamma), f32(b, T(args.inputs.mean)), f32(b, T(args.inputs.rstd)), rows, c, dx, dg, db);
        return [b.makeTensorInfo([...x.shape], 'float32', dx), b.makeTensorInfo([...gamma.shape], 'float32', dg), b.makeTensorInfo([...gamma.shape], 'float32', db)];
      },
    },
    {
      kernelName: KERNELS.causalAttention,
      kernelFunc: (args) => {
        const b = be(args);
        const q = T(args.inputs.q);
        const [bb, h, t, d] = q.shape as [number, number, number, number];
        const out = new Float32Array(bb * h * t * d);
        const lse = new Float32Array(bb * h * t);
        n.attention(f32(b, q), f32(b, T(args.inputs.k)), f32(b, T(args.inputs.v)), bb * h, t, d, args.attrs!.scale as number, out, lse);
        return [b.makeTensorInfo([bb, h, t, d], 'float32', out), b.makeTensorInfo([bb, h, t], 'float32', lse)];
      },
    },
    {
      kernelName: KERNELS.causalAttentionGrad,
      kernelFunc: (args) => {
        const b = be(args);
        const i = args.inputs;
        const q = T(i.q);
        const [bb, h, t, d] = q.shape as [number, number, number, number];
        const sz = bb * h * t * d;
        const dq = new Float32Array(sz);
        const dk = new Float32Array(sz);
        const dv = new Float32Array(sz);
        n.attentionGrad(f32(b, q), f32(b, T(i.k)), f32(b, T(i.v)), f32(b, T(i.out)), f32(b, T(i.lse)), f32(b, T(i.dy)), bb * h, t, d,
          args.attrs!.scale as number, dq, dk, dv);
        const s = [bb, h, t, d];
        return [b.makeTensorInfo(s, 'float32', dq), b.makeTensorInfo(s, 'float32', dk), b.makeTensorInfo(s, 'float32', dv)];
      },
    },
    {
      kernelName: KERNELS.crossEntropy,
      kernelFunc: (args) => {
        const b = be(args);
        const logits = T(args.inputs.logits);
        const labels = T(args.inputs.labels);
        const [nn, v] = logits.shape as [number, number];
        const k = labels.shape[1]!;
        const loss = new Float32Array(nn);
        const lse = new Float32Array(nn);
        n.crossEntropy(f32(b, logits), i32(b, labels), nn, v, k, loss, lse);
        return [b.makeTensorInfo([nn], 'float32', loss), b.makeTensorInfo([nn], 'float32', lse)];
      },
    },
    {
      kernelName: KERNELS.crossEntropyGrad,
      kernelFunc: (args) => {
        const b = be(args);
        const i = args.inputs;
        const logits = T(i.logits);
        const labels = T(i.labels);
        const [nn, v] = logits.shape as [number, number];
        const k = labels.shape[1]!;
        const dl = new Float32Array(nn * v);
        n.crossEntropyGrad(f32(b, logits), i32(b, labels), f32(b, T(i.lse)), f32(b, T(i.dy)), nn, v, k, dl);
        return b.makeTensorInfo([nn, v], 'float32', dl);
      },
    },
  ];
}

/** All native-backed kernels (empty when the addon is not loaded). */
export function nativeKernels(n: NativeAddon | undefined): KernelSpec[] {
  if (!n) return [];
  return [
    matMulKernel(n, 'BatchMatMul'),
    matMulKernel(n, '_FusedMatMul'),
    softmaxKernel(n),
    segmentSumKernel(n),
    transposeKernel(n),
    sumKernel(n),
    splitKernel(n),
    concatKernel(n),
    gatherKernel(),
    binaryKernel(n, 'Add', 0),
    binaryKernel(n, 'Sub', 1),
    binaryKernel(n, 'Multiply', 2),
    binaryKernel(n, 'RealDiv', 3),
    ...fusedKernels(n),
    ...blockSparseKernels(n),
    adamwKernel(n),
  ];
}
