/** Schedules of the dynamic modes, as functions of the sparse-training progress. */

/**
 * Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune"): sparsity at step u of S
 * sparse steps, rising from 0 at `start`·S to `final` at `end`·S along the cubic
 * s = final · (1 − (1 − p)³), p = (u − start·S) / ((end − start)·S).
 */
export function gmpSparsity(final: number, u: number, total: number, start: number, end: number): number {
  const t0 = start * total;
  const t1 = end * total;
  if (u <= t0) return 0;
  if (u >= t1 || t1 <= t0) return final;
  const p = (u - t0) / (t1 - t0);
  return final * (1 - Math.pow(1 - p, 3));
}

/**
 * RigL's update fraction (Evci et al. 2020): α/2 · (1 + cos(π u / (end·S))), 0 from end·S on. It is
 * the share of each layer's kept units dropped (smallest |w|) and regrown (largest |∇|) at an update.
 */
export function riglFraction(alpha: number, u: number, total: number, end: number): number {
  const t1 = end * total;
  if (u >= t1) return 0;
  return (alpha / 2) * (1 + Math.cos((Math.PI * u) / t1));
}
