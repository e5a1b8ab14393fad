/**
 * patchflow's fused ops. Each op has a composite definition built from stock tfjs ops (runs on any
 * backend, differentiated by tfjs) and may be backed by a fused kernel that a backend registers under
 * the names below (forward + gradient kernels). When the current backend has both, the op uses them
 * through tf.customGrad; otherwise it falls back to the composite. Kernel contracts:
 *
 * PfGelu            inputs {x}                     -> [y]                      (tanh approximation)
 * PfGeluGrad        inputs {x, dy}                 -> [dx]
 * PfLayerNorm       inputs {x, gamma, beta} attrs {eps}  -> [y, mean, rstd]    (over the last axis;
 *                   mean/rstd have x's shape without the last axis)
 * PfLayerNormGrad   inputs {dy, x, gamma, mean, rstd}    -> [dx, dgamma, dbeta]
 * PfCausalAttention inputs {q, k, v} attrs {scale}       -> [out, lse]         (q,k,v,out: [B,H,T,D];
 *                   lse: [B,H,T], log-sum-exp of each causal score row)
 * PfCausalAttentionGrad inputs {q, k, v, out, lse, dy} attrs {scale} -> [dq, dk, dv]
 * PfCrossEntropy    inputs {logits [N,V] float32, labels [N,K] int32} -> [loss [N], lse [N]]
 *                   loss[n] = mean_k (lse[n] - logits[n, labels[n,k]])
 * PfCrossEntropyGrad inputs {logits, labels, lse, dy [N]} -> [dlogits [N,V]]
 * PfBlockSparseMatMul inputs {x [M,K], w [K,N] float32, blockMask [K/b, N/b] int32, bias? [N]}
 *                   attrs {blockSize: b} -> [y [M,N]]  y = x @ (w ⊙ M) (+ bias on every row), M =
 *                   blockMask expanded to b×b blocks; only the non-zero blocks of w are read (the
 *                   kernel's work scales with the mask's density)
 * PfBlockSparseMatMulGrad inputs {x, w, blockMask, dy [M,N]} attrs {blockSize}
 *                   -> [dx [M,K], dw [K,N]]  dx = dy @ (w ⊙ M)^T; dw = (x^T @ dy) ⊙ M (exact zeros
 *                   outside the mask's blocks)
 * PfAdamW           inputs {w, g, m, v (same shape, float32), scale [] float32}
 *                   attrs {beta1, beta2, eps, decay, stepSize, bc2} -> [w', m', v'] (see adamwUpdate;
 *                   an optimizer update, no gradient)
 */
import * as tf from '@tensorflow/tfjs-core';

/** The kernel contract names (the header above states each one's inputs, attributes and outputs). */
export const KERNELS = {
  gelu: 'PfGelu',
  geluGrad: 'PfGeluGrad',
  layerNorm: 'PfLayerNorm',
  layerNormGrad: 'PfLayerNormGrad',
  causalAttention: 'PfCausalAttention',
  causalAttentionGrad: 'PfCausalAttentionGrad',
  crossEntropy: 'PfCrossEntropy',
  crossEntropyGrad: 'PfCrossEntropyGrad',
  blockSparseMatMul: 'PfBlockSparseMatMul',
  blockSparseMatMulGrad: 'PfBlockSparseMatMulGrad',
  adamw: 'PfAdamW',
} as const;

export const FUSED_OPS = [KERNELS.gelu, KERNELS.layerNorm, KERNELS.causalAttention, KERNELS.crossEntropy, KERNELS.blockSparseMatMul] as const;

const GRAD_KERNEL: Record<string, string> = {
  [KERNELS.gelu]: KERNELS.geluGrad,
  [KERNELS.layerNorm]: KERNELS.layerNormGrad,
  [KERNELS.causalAttention]: KERNELS.causalAttentionGrad,
  [KERNELS.crossEntropy]: KERNELS.crossEntropyGrad,
  [KERNELS.blockSparseMatMul]: KERNELS.blockSparseMatMulGrad,
};

let forceComposite = false;
/** Disables fused kernels (for testing composites against kernels, and for profiling). */
export function setFusedKernelsEnabled(enabled: boolean): void {
  forceComposite = !enabled;
}

/** True when the current backend implements fused op `name` and its gradient. */
export function hasFusedKernel(name: (typeof FUSED_OPS)[number]): boolean {
  if (forceComposite) return false;
  const b = tf.getBackend();
  return !!tf.getKernel(name, b) && !!tf.getKernel(GRAD_KERNEL[name]!, b);
}

// tf.customGrad's typing cannot express (tensors..., save) signatures; this narrows it once.
type GradFn = (...args: any[]) => { value: tf.Tensor; gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor | tf.Tensor[] };
const customGrad = (f: GradFn) => tf.customGrad(f as unknown as Parameters<typeof tf.customGrad>[0]) as (...inputs: tf.Tensor[]) => tf.Tensor;

function run(name: string, inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap = {}): tf.Tensor[] {
  const r = tf.engine().runKernel(name, inputs, attrs);
  return Array.isArray(r) ? (r as tf.Tensor[]) : [r as tf.Tensor];
}

const GELU_C = Math.sqrt(2 / Math.PI);

export function geluComposite(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const inner = tf.mul(GELU_C, tf.add(x, tf.mul(0.044715, tf.pow(x, 3))));
    return tf.mul(tf.mul(0.5, x), tf.add(1, tf.tanh(inner)));
  });
}

/** GELU, tanh approximation (GPT-2's). */
export function gelu<T extends tf.Tensor>(x: T): T {
  if (!hasFusedKernel(KERNELS.gelu)) return geluComposite(x) as T;
  const f = customGrad((xi: tf.Tensor, save: tf.GradSaveFunc) => {
    save([xi]);
    return { value: run(KERNELS.gelu, { x: xi })[0]!, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => run(KERNELS.geluGrad, { x: saved[0]!, dy })[0]! };
  });
  return f(x) as T;
}

export function layerNormComposite(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps = 1e-5): tf.Tensor {
  return tf.tidy(() => {
    const axis = x.rank - 1;
    const { mean, variance } = tf.moments(x, axis, true);
    return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), gamma), beta);
  });
}

/** LayerNorm over the last axis with affine parameters gamma and beta ([C]). */
export function layerNorm<T extends tf.Tensor>(x: T, gamma: tf.Tensor, beta: tf.Tensor, eps = 1e-5): T {
  if (!hasFusedKernel(KERNELS.layerNorm)) return layerNormComposite(x, gamma, beta, eps) as T;
  const f = customGrad((xi: tf.Tensor, g: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
    const [y, mean, rstd] = run(KERNELS.layerNorm, { x: xi, gamma: g, beta: b }, { eps });
    save([xi, g, mean!, rstd!]);
    return {
      value: y!,
      gradFunc: (dy: tf.Tensor, s: tf.Tensor[]) => run(KERNELS.layerNormGrad, { dy, x: s[0]!, gamma: s[1]!, mean: s[2]!, rstd: s[3]! }),
    };
  });
  return f(x, gamma, beta) as T;
}

// One causal mask per (backend, T): a tensor lives on the backend that made it.
const maskCache = new Map<string, tf.Tensor>();
function causalMask(t: number): tf.Tensor {
  const key = `${tf.getBackend()}:${t}`;
  const hit = maskCache.get(key);
  if (hit && !hit.isDisposed) return hit;
  const m = new Float32Array(t * t);
  for (let i = 0; i < t; i++) for (let j = i + 1; j < t; j++) m[i * t + j] = -1e9;
  const mask = tf.keep(tf.tensor2d(m, [t, t]));
  maskCache.set(key, mask);
  return mask;
}

export function causalAttentionComposite(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, scale: number): tf.Tensor4D {
  return tf.tidy(() => {
    const t = q.shape[2];
    const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), scale), causalMask(t));
    return tf.matMul(tf.softmax(scores), v) as tf.Tensor4D;
  });
}

/** Causal scaled dot-product attention; q, k, v: [B, H, T, D]. */
export function causalAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, scale = 1 / Math.sqrt(q.shape[3])): tf.Tensor4D {
  if (!hasFusedKernel(KERNELS.causalAttention)) return causalAttentionComposite(q, k, v, scale);
  const f = customGrad((qi: tf.Tensor, ki: tf.Tensor, vi: tf.Tensor, save: tf.GradSaveFunc) => {
    const [out, lse] = run(KERNELS.causalAttention, { q: qi, k: ki, v: vi }, { scale });
    save([qi, ki, vi, out!, lse!]);
    return {
      value: out!,
      gradFunc: (dy: tf.Tensor, s: tf.Tensor[]) =>
        run(KERNELS.causalAttentionGrad, { q: s[0]!, k: s[1]!, v: s[2]!, out: s[3]!, lse: s[4]!, dy }, { scale }),
    };
  });
  return f(q, k, v) as tf.Tensor4D;
}

export function crossEntropyComposite(logits: tf.Tensor2D, labels: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => {
    const [n, v] = logits.shape;
    const kk = labels.shape[1];
    const logp = tf.logSoftmax(logits);
    // one-hot of each of the K labels, averaged: [N, V]
    const target = tf.div(tf.sum(tf.reshape(tf.oneHot(tf.reshape(labels, [n * kk]), v), [n, kk, v]), 1), kk);
    return tf.neg(tf.sum(tf.mul(logp, target), 1)) as tf.Tensor1D;
  });
}

/**
 * Cross-entropy of each row of `logits` ([N, V]) against K labels per row (`labels`, int32 [N, K]),
 * from one log-softmax: loss[n] = mean_k -log softmax(logits[n])[labels[n, k]]. K = 1 is the usual
 * next-token loss; K > 1 is the patch-level loss.
 */
export function crossEntropy(logits: tf.Tensor2D, labels: tf.Tensor2D): tf.Tensor1D {
  if (labels.dtype !== 'int32') throw new Error('crossEntropy: labels must be int32');
  if (!hasFusedKernel(KERNELS.crossEntropy)) return crossEntropyComposite(logits, labels);
  const f = customGrad((lg: tf.Tensor, save: tf.GradSaveFunc) => {
    const [loss, lse] = run(KERNELS.crossEntropy, { logits: lg, labels });
    // labels are saved too: a caller may create them inside the differentiated function, and tfjs
    // disposes such tensors before the backward pass unless they are saved.
    save([lg, lse!, labels]);
    return {
      value: loss!,
      gradFunc: (dy: tf.Tensor, s: tf.Tensor[]) => run(KERNELS.crossEntropyGrad, { logits: s[0]!, labels: s[2]!, lse: s[1]!, dy })[0]!,
    };
  });
  return f(logits) as tf.Tensor1D;
}

/** A block mask [K/b, N/b] (any dtype, non-zero = kept) expanded to a float32 element mask [K, N]. */
export function expandBlockMask(blockMask: tf.Tensor2D, blockSize: number): tf.Tensor2D {
  return tf.tidy(() => {
    const [kb, nb] = blockMask.shape;
    const m = tf.cast(tf.notEqual(blockMask, 0), 'float32');
    return tf.reshape(tf.tile(tf.reshape(m, [kb, 1, nb, 1]), [1, blockSize, 1, blockSize]), [kb * blockSize, nb * blockSize]) as tf.Tensor2D;
  });
}

export function blockSparseMatMulComposite(x: tf.Tensor2D, w: tf.Tensor2D, blockMask: tf.Tensor2D, blockSize: number, bias?: tf.Tensor): tf.Tensor2D {
  return tf.tidy(() => {
    const y = tf.matMul(x, tf.mul(w, expandBlockMask(blockMask, blockSize)));
    return (bias ? tf.add(y, bias) : y) as tf.Tensor2D;
  });
}

function checkBlockSparse(x: tf.Tensor2D, w: tf.Tensor2D, blockMask: tf.Tensor2D, b: number): void {
  const [k, n] = w.shape;
  if (x.rank !== 2 || w.rank !== 2 || blockMask.rank !== 2) throw new Error('blockSparseMatMul: x, w and blockMask must be 2-D');
  if (x.shape[1] !== k) throw new Error(`blockSparseMatMul: x is [${x.shape}] but w is [${w.shape}]`);
  if (!(Number.isInteger(b) && b > 0) || k % b || n % b) throw new Error(`blockSparseMatMul: block size ${b} does not divide w's shape [${w.shape}]`);
  if (blockMask.shape[0] !== k / b || blockMask.shape[1] !== n / b) {
    throw new Error(`blockSparseMatMul: blockMask is [${blockMask.shape}] but w [${w.shape}] in ${b}×${b} blocks needs [${k / b},${n / b}]`);
  }
}

/**
 * x [M,K] @ (w ⊙ mask) (+ bias [N]) for a mask made of b×b blocks (`blockMask` [K/b, N/b] int32,
 * non-zero = kept). Differentiable in x, w and bias; w's gradient is zero outside the kept blocks.
 * With a backend kernel only the kept blocks are computed (forward and both backward products).
 */
export function blockSparseMatMul(x: tf.Tensor2D, w: tf.Tensor2D, blockMask: tf.Tensor2D, blockSize: number, bias?: tf.Tensor): tf.Tensor2D {
  checkBlockSparse(x, w, blockMask, blockSize);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== w.shape[1])) throw new Error(`blockSparseMatMul: bias is [${bias.shape}] but w is [${w.shape}]`);
  if (!hasFusedKernel(KERNELS.blockSparseMatMul)) return blockSparseMatMulComposite(x, w, blockMask, blockSize, bias);
  const mask = blockMask.dtype === 'int32' ? blockMask : tf.cast(tf.notEqual(blockMask, 0), 'int32');
  const attrs = { blockSize };
  const grad = (dy: tf.Tensor, s: tf.Tensor[]) => run(KERNELS.blockSparseMatMulGrad, { x: s[0]!, w: s[1]!, blockMask: s[2]!, dy }, attrs);
  if (!bias) {
    const f = customGrad((xi: tf.Tensor, wi: tf.Tensor, save: tf.GradSaveFunc) => {
      save([xi, wi, mask]);
      return { value: run(KERNELS.blockSparseMatMul, { x: xi, w: wi, blockMask: mask }, attrs)[0]!, gradFunc: grad };
    });
    return f(x, w) as tf.Tensor2D;
  }
  const f = customGrad((xi: tf.Tensor, wi: tf.Tensor, bi: tf.Tensor, save: tf.GradSaveFunc) => {
    save([xi, wi, mask]);
    return {
      value: run(KERNELS.blockSparseMatMul, { x: xi, w: wi, blockMask: mask, bias: bi }, attrs)[0]!,
      gradFunc: (dy: tf.Tensor, s: tf.Tensor[]) => [...grad(dy, s), tf.sum(dy, 0)],
    };
  });
  return f(x, w, bias) as tf.Tensor2D;
}

export interface AdamWStep {
  beta1: number;
  beta2: number;
  eps: number;
  /** Multiplier of w before the update: 1 − lr·weightDecay (decoupled decay), or 1. */
  decay: number;
  /** lr / (1 − beta1^t). */
  stepSize: number;
  /** 1 − beta2^t. */
  bc2: number;
}

export function adamwUpdateComposite(w: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, scale: tf.Scalar, o: AdamWStep): [tf.Tensor, tf.Tensor, tf.Tensor] {
  return tf.tidy(() => {
    const gs = tf.mul(g, scale);
    const m1 = tf.add(tf.mul(m, o.beta1), tf.mul(gs, 1 - o.beta1));
    const v1 = tf.add(tf.mul(v, o.beta2), tf.mul(tf.square(gs), 1 - o.beta2));
    const denom = tf.add(tf.sqrt(tf.div(v1, o.bc2)), o.eps);
    const w0 = o.decay !== 1 ? tf.mul(w, o.decay) : w;
    return [tf.sub(w0, tf.mul(tf.div(m1, denom), o.stepSize)), m1, v1];
  });
}

/**
 * One AdamW update of a parameter: g' = g·scale (gradient clipping), m' = β1·m + (1−β1)·g',
 * v' = β2·v + (1−β2)·g'², w' = w·decay − stepSize·m' / (√(v'/bc2) + eps). Returns [w', m', v'].
 * One pass over memory with a backend kernel (`PfAdamW`), a dozen elementwise ops without.
 */
export function adamwUpdate(w: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, scale: tf.Scalar, o: AdamWStep): [tf.Tensor, tf.Tensor, tf.Tensor] {
  if (forceComposite || !tf.getKernel(KERNELS.adamw, tf.getBackend())) return adamwUpdateComposite(w, g, m, v, scale, o);
  const r = run(KERNELS.adamw, { w, g, m, v, scale }, { ...o });
  return [r[0]!, r[1]!, r[2]!];
}
