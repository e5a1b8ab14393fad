/** AdamW (decoupled weight decay), linear warmup + cosine decay, global-norm gradient clipping. */
import { tf, adamwUpdate } from '@patchflow/tensor';
import type { OptimConfig } from './config.js';
import { CheckpointError } from './checkpoint.js';

/** Learning rate at `step` (0-based) of a schedule that lasts `total` steps. */
export function learningRate(o: OptimConfig, step: number, total: number): number {
  const warm = Math.min(o.warmupSteps, Math.max(0, total - 1));
  if (step < warm) return (o.lr * (step + 1)) / (warm + 1);
  const span = Math.max(1, total - warm);
  const progress = Math.min(1, (step - warm) / span);
  const minLr = o.lr * o.minLrRatio;
  return minLr + 0.5 * (o.lr - minLr) * (1 + Math.cos(Math.PI * progress));
}

export interface ParamEntry {
  name: string;
  variable: tf.Variable;
  decay: boolean;
}

export class AdamW {
  private m = new Map<string, tf.Variable>();
  private v = new Map<string, tf.Variable>();
  /** Number of updates taken (bias correction uses it). */
  t = 0;

  constructor(
    readonly config: OptimConfig,
    readonly params: ParamEntry[],
  ) {
    this.reset();
  }

  /** Fresh moments (a new phase that restarts the optimizer). */
  reset(): void {
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
    this.m.clear();
    this.v.clear();
    for (const p of this.params) {
      this.m.set(p.name, tf.variable(tf.zerosLike(p.variable), false));
      this.v.set(p.name, tf.variable(tf.zerosLike(p.variable), false));
    }
    this.t = 0;
  }

  /** Zeroes the moments of the entries where `keep` is 0 (used by masks and regrowth). */
  maskMoments(name: string, keep: tf.Tensor): void {
    tf.tidy(() => {
      this.m.get(name)!.assign(tf.mul(this.m.get(name)!, keep));
      this.v.get(name)!.assign(tf.mul(this.v.get(name)!, keep));
    });
  }

  /**
   * Clips gradients to `gradClip` global norm, applies one AdamW update with learning rate `lr`,
   * and returns the gradient norm before clipping (a tensor scalar, not yet read).
   */
  step(grads: Record<string, tf.Tensor>, lr: number): tf.Scalar {
    const o = this.config;
    this.t += 1;
    const t = this.t;
    return tf.tidy(() => {
      // pairwise adds, not tf.addN: webgpu binds one storage buffer per addN input and devices
      // allow as few as 8 per shader stage
      const sq = this.params.map((p) => tf.sum(tf.square(grads[p.name]!)));
      const norm = tf.sqrt(sq.reduce((a, b) => tf.add(a, b))) as tf.Scalar;
      const scale = o.gradClip > 0 ? tf.minimum(1, tf.div(o.gradClip, tf.add(norm, 1e-6))) : tf.scalar(1);
      const bc1 = 1 - Math.pow(o.beta1, t);
      const bc2 = 1 - Math.pow(o.beta2, t);
      const stepSize = lr / bc1;
      for (const p of this.params) {
        const m = this.m.get(p.name)!;
        const v = this.v.get(p.name)!;
        const decay = p.decay && o.weightDecay > 0 ? 1 - lr * o.weightDecay : 1;
        const [w1, m1, v1] = adamwUpdate(p.variable, grads[p.name]!, m, v, scale as tf.Scalar, { beta1: o.beta1, beta2: o.beta2, eps: o.eps, decay, stepSize, bc2 });
        m.assign(m1);
        v.assign(v1);
        p.variable.assign(w1);
      }
      return tf.keep(norm);
    });
  }

  async exportState(): Promise<{ t: number; tensors: Record<string, { shape: number[]; data: Float32Array }> }> {
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const p of this.params) {
      tensors[`m.${p.name}`] = { shape: p.variable.shape, data: (await this.m.get(p.name)!.data()) as Float32Array };
      tensors[`v.${p.name}`] = { shape: p.variable.shape, data: (await this.v.get(p.name)!.data()) as Float32Array };
    }
    return { t: this.t, tensors };
  }

  importState(t: number, tensors: Record<string, { shape: number[]; data: Float32Array }>): void {
    for (const p of this.params) {
      for (const [prefix, map] of [['m', this.m], ['v', this.v]] as const) {
        const e = tensors[`${prefix}.${p.name}`];
        if (!e || e.shape.join('x') !== p.variable.shape.join('x')) {
          throw new CheckpointError(`optimizer state for "${p.name}" is missing or has the wrong shape`);
        }
        const x = tf.tensor(e.data, e.shape);
        map.get(p.name)!.assign(x);
        x.dispose();
      }
    }
    this.t = t;
  }

  dispose(): void {
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
  }
}
