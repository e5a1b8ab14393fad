/**
 * Kernels of f16 mixed-precision training (the compiled step with `precision: 'f16'`):
 *
 * castF16: the f16 copy of the flat parameter buffer (out[i] = f16(w[i]), same element offsets) that
 * the matmuls read their weights from. Run once per step before the forward pass, i.e. after the
 * previous step's AdamW update (and after weights are uploaded). The f32 master weights, gradients and
 * AdamW moments stay f32.
 *
 * Dynamic loss scaling keeps its state on the GPU in `scaler` (f32 [4]):
 *   [0] loss scale S, [1] clean steps since the last change, [2] skipped steps in total,
 *   [3] overflow of the current step (1 = its scaled gradients held an inf or NaN).
 * crossEntropy({lossScale: true}) multiplies the loss gradient by S; gradNorm({lossScale: true})
 * detects the overflow, reports the unscaled norm and folds 1/S into the clip factor, so adamw
 * unscales for free and skips the step on overflow (a non-finite norm). lossScaleUpdate then halves S
 * on overflow (not below `minScale`) and doubles it after `growthInterval` clean steps (not above
 * `maxScale`), as PyTorch's GradScaler does.
 */
import { cdiv, dim, f32lit, grid, makeKernel, type KernelSpec } from './kernel.js';

export interface LossScaleConfig {
  /** First loss scale (default 2^15). */
  init: number;
  /** Clean steps before the scale doubles (default 1000). */
  growthInterval: number;
  /** Bounds of the scale (default 1 and 2^24). */
  minScale: number;
  maxScale: number;
}

export const DEFAULT_LOSS_SCALE: LossScaleConfig = { init: 2 ** 15, growthInterval: 1000, minScale: 1, maxScale: 2 ** 24 };

/** The initial contents of the `scaler` buffer. */
export function lossScaleState(c: Pick<LossScaleConfig, 'init'> = DEFAULT_LOSS_SCALE): Float32Array {
  return new Float32Array([c.init, 0, 0, 0]);
}

/** Bindings: w (read f32 [n]), out (f16 [n]). n must be a multiple of 4 (the flat layout's is: 64-aligned). */
export function castF16(p: { n: number }): KernelSpec {
  const N = dim('castF16 n', p.n);
  if (N % 4) throw new Error(`castF16: n = ${N} is not a multiple of 4`);
  const q = N / 4;
  const g = grid(cdiv(q, 256));
  return makeKernel({
    label: `cast f16 ${N}`,
    bindings: [
      { name: 'w', access: 'read' },
      { name: 'out', access: 'read_write', overwrite: true },
    ],
    types: { w: 'array<vec4<f32>>', out: 'array<vec4<f16>>' },
    enables: ['f16'],
    workgroups: g.workgroups,
    body: `@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let i = ${g.flat} * 256u + lid;
  if (i < ${q}u) { out[i] = vec4<f16>(w[i]); }
}`,
    bytes: N * 6,
  });
}

/** Bindings: scaler (read_write f32 [4]). One invocation; run after adamw. */
export function lossScaleUpdate(c: Partial<LossScaleConfig> = {}): KernelSpec {
  const cfg = { ...DEFAULT_LOSS_SCALE, ...c };
  dim('lossScaleUpdate growthInterval', cfg.growthInterval);
  return makeKernel({
    label: `loss scale update (x2 after ${cfg.growthInterval})`,
    bindings: [{ name: 'scaler', access: 'read_write' }],
    types: { scaler: 'array<f32>' },
    workgroups: [1, 1, 1],
    body: `@compute @workgroup_size(1)
fn main() {
  if (scaler[3] != 0.0) {
    scaler[0] = max(scaler[0] * 0.5, ${f32lit(cfg.minScale)});
    scaler[1] = 0.0;
    scaler[2] = scaler[2] + 1.0;
  } else {
    scaler[1] = scaler[1] + 1.0;
    if (scaler[1] >= ${f32lit(cfg.growthInterval)}) {
      scaler[0] = min(scaler[0] * 2.0, ${f32lit(cfg.maxScale)});
      scaler[1] = 0.0;
    }
  }
}`,
  });
}
