/** Test helpers: backend switching, float64 references, closeness checks. */
import { expect } from 'vitest';
// ../src/index.js also registers tfjs-core's gradients (src/gradients.ts).
import { tf, useBackend } from '../src/index.js';
import { rand } from '@patchflow/test-fixtures';

export { tf };

/** Runs f with patchflow backend `name` current; tensors must be created inside f. */
export async function on<T>(name: 'cpu' | 'tfjs-cpu', f: () => T): Promise<T> {
  await useBackend(name);
  return f();
}

/** Deterministic uniform values in [-scale, scale) (shared with the other packages' tests). */
export { rand };

/** Asserts |a - e| <= atol + rtol * |e| elementwise, reporting the worst element. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol = 0, what = ''): void {
  expect(actual.length, `${what} length`).toBe(expected.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    const excess = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (!(excess <= worstExcess) || Number.isNaN(a)) {
      worst = i;
      worstExcess = Number.isNaN(a) ? Infinity : excess;
    }
  }
  if (worst >= 0) {
    expect.fail(`${what}: element ${worst} is ${actual[worst]} but expected ${expected[worst]} (atol ${atol}, rtol ${rtol})`);
  }
}

export const maxAbs = (a: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
};

/** Central finite differences (float64) of L(x) = sum(w * f(x)) with respect to x. */
export function numericGrad(f: (x: Float64Array) => Float64Array, x: Float64Array, w: ArrayLike<number>, h = 1e-5): Float64Array {
  const g = new Float64Array(x.length);
  const L = (xx: Float64Array) => {
    const y = f(xx);
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i]! * w[i]!;
    return s;
  };
  for (let i = 0; i < x.length; i++) {
    const xp = Float64Array.from(x);
    const xm = Float64Array.from(x);
    xp[i]! += h;
    xm[i]! -= h;
    g[i] = (L(xp) - L(xm)) / (2 * h);
  }
  return g;
}

// ---- float64 references, written independently of ops.ts and the native kernels ----

export function gelu64(x: ArrayLike<number>): Float64Array {
  const c = Math.sqrt(2 / Math.PI);
  return Float64Array.from(x, (v) => 0.5 * v * (1 + Math.tanh(c * (v + 0.044715 * v * v * v))));
}

export function layerNorm64(x: ArrayLike<number>, g: ArrayLike<number>, b: ArrayLike<number>, C: number, eps = 1e-5): Float64Array {
  const rows = x.length / C;
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let mu = 0;
    for (let c = 0; c < C; c++) mu += x[r * C + c]!;
    mu /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c]! - mu) ** 2;
    v /= C;
    for (let c = 0; c < C; c++) y[r * C + c] = ((x[r * C + c]! - mu) / Math.sqrt(v + eps)) * g[c]! + b[c]!;
  }
  return y;
}

/** q, k, v: [BH, T, D] flattened; causal softmax(q k^T * scale) v. */
export function attention64(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, BH: number, T: number, D: number, scale: number): Float64Array {
  const out = new Float64Array(BH * T * D);
  for (let h = 0; h < BH; h++) {
    const o = h * T * D;
    for (let i = 0; i < T; i++) {
      const s: number[] = [];
      for (let j = 0; j <= i; j++) {
        let d = 0;
        for (let x = 0; x < D; x++) d += q[o + i * D + x]! * k[o + j * D + x]!;
        s.push(d * scale);
      }
      const m = Math.max(...s);
      const e = s.map((z) => Math.exp(z - m));
      const z = e.reduce((a, b) => a + b, 0);
      for (let x = 0; x < D; x++) {
        let acc = 0;
        for (let j = 0; j <= i; j++) acc += (e[j]! / z) * v[o + j * D + x]!;
        out[o + i * D + x] = acc;
      }
    }
  }
  return out;
}

/** loss[n] = mean_k (logsumexp(logits[n]) - logits[n, labels[n, k]]). */
export function crossEntropy64(logits: ArrayLike<number>, labels: ArrayLike<number>, N: number, V: number, K: number): Float64Array {
  const loss = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, logits[n * V + v]!);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(logits[n * V + v]! - m);
    const lse = m + Math.log(s);
    let acc = 0;
    for (let k = 0; k < K; k++) acc += lse - logits[n * V + labels[n * K + k]!]!;
    loss[n] = acc / K;
  }
  return loss;
}

/** Plain triple-loop matmul in float64 with tfjs BatchMatMul semantics (batch index modulo). */
export function matmul64(a: ArrayLike<number>, b: ArrayLike<number>, batchA: number, batchB: number, M: number, N: number, K: number, ta: boolean, tb: boolean): Float64Array {
  const batch = Math.max(batchA, batchB);
  const c = new Float64Array(batch * M * N);
  for (let bi = 0; bi < batch; bi++) {
    const oa = (bi % batchA) * M * K;
    const ob = (bi % batchB) * K * N;
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let p = 0; p < K; p++) s += a[oa + (ta ? p * M + i : i * K + p)]! * b[ob + (tb ? j * K + p : p * N + j)]!;
        c[bi * M * N + i * N + j] = s;
      }
  }
  return c;
}
