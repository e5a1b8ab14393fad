/**
 * float64 reference implementations, written independently of the kernels they check (row-major
 * flat arrays, plain loops).
 */

/** C[m, n] = op(A) op(B) in float64; op(A) is [m, k] (stored [k, m] when transA), op(B) [k, n] (stored [n, k] when transB). */
export function matmulRef(a: ArrayLike<number>, b: ArrayLike<number>, m: number, n: number, k: number, transA = false, transB = false): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += (transA ? a[p * m + i]! : a[i * k + p]!) * (transB ? b[j * k + p]! : b[p * n + j]!);
      c[i * n + j] = s;
    }
  }
  return c;
}

/**
 * The block-sparse product and its gradients: y = x @ (w⊙M), dx = dy @ (w⊙M)ᵀ, dw = (xᵀ @ dy) ⊙ M,
 * for x [m, k], w [k, n], dy [m, n] and a [k/b, n/b] block mask M (non-zero = kept).
 */
export function blockSparseRef(x: Float32Array, w: Float32Array, mask: Int32Array, dy: Float32Array, m: number, k: number, n: number, b: number) {
  const nb = n / b;
  const kept = (r: number, c: number) => mask[Math.floor(r / b) * nb + Math.floor(c / b)] !== 0;
  const wm = new Float64Array(k * n);
  for (let r = 0; r < k; r++) for (let c = 0; c < n; c++) wm[r * n + c] = kept(r, c) ? w[r * n + c]! : 0;
  const y = matmulRef(x, wm, m, n, k);
  const dx = matmulRef(dy, wm, m, k, n, false, true);
  const dwFull = matmulRef(x, dy, k, n, m, true, false);
  const dw = new Float64Array(k * n);
  for (let r = 0; r < k; r++) for (let c = 0; c < n; c++) dw[r * n + c] = kept(r, c) ? dwFull[r * n + c]! : 0;
  return { y, dx, dw, kept };
}
