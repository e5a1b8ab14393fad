/**
 * The masks of one sparse run and what keeps them in force: per masked matrix its 0/1 mask, the
 * tensors the model and optimizer use (a float mask, and an int32 block mask for block patterns),
 * and whether its products go through the backend's block-sparse kernel.
 */
import { tf, blockSparseMatMul, hasFusedKernel, KERNELS } from '@patchflow/tensor';
import type { AdamW, GPT, ParamSpec } from '@patchflow/trainer';
import { type Pattern, blockMaskOf, countKept } from './masks.js';
import { KERNEL_MAX_DENSITY, type SparsitySettings } from './options.js';

export interface MaskEntry {
  spec: ParamSpec;
  shape: [number, number];
  mask: Uint8Array;
  kept: number;
  /** float32 0/1 [K, N] (absent while the mask keeps everything). */
  maskT?: tf.Tensor;
  /** int32 [K/b, N/b] (block patterns). */
  blockT?: tf.Tensor2D;
  /** Products currently go through the block-sparse kernel. */
  kernel: boolean;
}

/** Whether masks are in force (not in a dense phase) and whether this step's products must be dense (a RigL update step). */
export interface Routing {
  active: boolean;
  denseGradStep: boolean;
}

export class MaskSet {
  readonly entries = new Map<string, MaskEntry>();

  constructor(
    private readonly s: SparsitySettings,
    private readonly pattern: Pattern,
    private readonly model: GPT,
    private readonly optimizer: AdamW,
    private readonly routing: Routing,
  ) {}

  add(spec: ParamSpec, mask: Uint8Array): void {
    const e: MaskEntry = { spec, shape: [spec.shape[0]!, spec.shape[1]!], mask, kept: countKept(mask), kernel: false };
    this.entries.set(spec.name, e);
    this.setTensors(e);
  }

  /** Rebuilds an entry's tensors from its mask and routes its products. */
  setTensors(e: MaskEntry): void {
    e.maskT?.dispose();
    e.blockT?.dispose();
    e.maskT = undefined;
    e.blockT = undefined;
    if (e.kept < e.mask.length) e.maskT = tf.keep(tf.tensor(Float32Array.from(e.mask), e.shape));
    if (this.pattern.kind === 'block') {
      const b = this.pattern.size;
      e.blockT = tf.keep(tf.tensor2d(blockMaskOf(e.mask, e.shape, b), [e.shape[0] / b, e.shape[1] / b], 'int32'));
    }
    this.route(e);
  }

  /** Sends a matrix's products through the block-sparse kernel when that pays, else dense. A lookup table has no products to route. */
  route(e: MaskEntry): void {
    const { active, denseGradStep } = this.routing;
    const lookup = e.spec.role === 'embedding';
    const usable =
      active && !denseGradStep && this.s.kernel === 'auto' && this.pattern.kind === 'block' && !!e.blockT &&
      e.kept / e.mask.length <= KERNEL_MAX_DENSITY && hasFusedKernel(KERNELS.blockSparseMatMul) && !lookup;
    e.kernel = usable;
    if (lookup) return;
    if (usable) {
      const b = (this.pattern as { size: number }).size;
      this.model.setMatMul(e.spec.name, (x, w, bias) => blockSparseMatMul(x, w, e.blockT!, b, bias));
    } else this.model.setMatMul(e.spec.name, undefined);
  }

  routeAll(): void {
    for (const e of this.entries.values()) this.route(e);
  }

  /** Zeroes the pruned weights. */
  apply(): void {
    tf.tidy(() => {
      for (const [name, e] of this.entries) if (e.maskT) this.model.p(name).assign(tf.mul(this.model.p(name), e.maskT));
    });
  }

  /** Swaps a matrix's mask: moments survive only where the entry was kept before and after; newly kept weights start at zero. */
  replace(e: MaskEntry, next: Uint8Array): void {
    const both = new Float32Array(next.length);
    for (let i = 0; i < next.length; i++) both[i] = e.mask[i]! & next[i]!;
    tf.tidy(() => {
      const keep = tf.tensor(both, e.shape);
      this.optimizer.maskMoments(e.spec.name, keep);
      this.model.p(e.spec.name).assign(tf.mul(this.model.p(e.spec.name), keep));
    });
    e.mask = next;
    e.kept = countKept(next);
    this.setTensors(e);
  }

  /** The kept units (entries, or blocks) of a mask, as 0/1. */
  keptUnits(e: MaskEntry): Uint8Array {
    return this.pattern.kind === 'block' ? Uint8Array.from(blockMaskOf(e.mask, e.shape, this.pattern.size)) : e.mask.slice();
  }

  /** Densities of the masks themselves (also in a dense phase, where they no longer apply). */
  densities(): { overall: number; layers: Record<string, number> } {
    const layers: Record<string, number> = {};
    let kept = 0;
    let size = 0;
    for (const [name, e] of this.entries) {
      layers[name] = e.kept / e.mask.length;
      kept += e.kept;
      size += e.mask.length;
    }
    return { overall: size ? kept / size : 1, layers };
  }
}
