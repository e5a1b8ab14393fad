/**
 * Mask updates of the dynamic modes.
 * - RigL (Evci et al. 2020): drop the smallest-|w| share `f` of each layer's kept units and regrow as
 *   many of the previously pruned units with the largest |∇| (the dense gradient of the update step).
 * - GMP (Zhu & Gupta 2017): prune each layer to its share of the schedule's current sparsity by |w|.
 */
import type { tf } from '@patchflow/tensor';
import { type Pattern, countKept, topUnits, unitCount, unitScores, unitsToMask } from './masks.js';
import type { MaskSet } from './maskset.js';

/** One RigL round with update fraction `f`; `gradScores` holds |∇| per unit of each matrix (dense step). */
export async function dropAndGrow(masks: MaskSet, pattern: Pattern, gradScores: Map<string, tf.Tensor>, f: number, weight: (name: string) => tf.Tensor): Promise<void> {
  for (const [name, e] of masks.entries) {
    const g = gradScores.get(name);
    if (!g) continue;
    const grad = (await g.data()) as Float32Array;
    const w = (await weight(name).data()) as Float32Array;
    const units = unitCount(pattern, e.shape);
    const was = masks.keptUnits(e);
    const nKept = countKept(was);
    const d = Math.min(Math.round(f * nKept), units - nKept);
    if (d <= 0) continue;
    const stay = topUnits(unitScores(w, e.shape, pattern), nKept - d, was);
    const grow = topUnits(grad, d, was.map((x) => 1 - x));
    const next = new Uint8Array(units);
    for (let i = 0; i < units; i++) next[i] = stay[i]! | grow[i]!;
    masks.replace(e, unitsToMask(next, e.shape, pattern));
  }
}

/**
 * One GMP round: each matrix keeps `1 − (1 − target) · sparsityNow / sparsity` of its units (its ERK or
 * uniform target density scaled along the schedule). Returns whether any mask changed.
 */
export async function prune(
  masks: MaskSet,
  pattern: Pattern,
  targets: Record<string, number>,
  sparsity: number,
  sparsityNow: number,
  weight: (name: string) => tf.Tensor,
): Promise<boolean> {
  let changed = false;
  for (const [name, e] of masks.entries) {
    const layerTarget = 1 - (1 - targets[name]!) * (sparsity > 0 ? sparsityNow / sparsity : 0);
    const units = unitCount(pattern, e.shape);
    const keepUnits = Math.round(layerTarget * units);
    const was = masks.keptUnits(e);
    if (keepUnits >= countKept(was)) continue;
    const w = (await weight(name).data()) as Float32Array;
    masks.replace(e, unitsToMask(topUnits(unitScores(w, e.shape, pattern), keepUnits, was), e.shape, pattern));
    changed = true;
  }
  return changed;
}
