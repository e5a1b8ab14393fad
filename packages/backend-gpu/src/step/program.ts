/// <reference types="@webgpu/types" />
/**
 * The compiled training step on WebGPU: a Schedule (@patchflow/dataflow-runtime lowerStep) bound to
 * GPU buffers once and replayed every step.
 *
 * GpuTrainingState holds what lives across steps and phases: the flat parameter, gradient and AdamW
 * moment buffers (one range per parameter, the schedule's layout), the decay bits and the masks.
 * A StepProgram is one phase's schedule: its arena and input buffers, one pipeline per kernel, one bind
 * group per dispatch (per micro-batch where inputs differ), all created once. A step writes the
 * micro-batches' token ids, labels and the embedding's CSR index, and the 16-byte AdamW uniform, then
 * encodes the prebuilt dispatches into one compute pass and submits once. Its loss and gradient norm
 * are copied to a staging buffer of a small ring and mapped asynchronously: the caller may submit the
 * next step before reading this one's loss.
 *
 * Precision 'f16' (mixed precision): the master weights, gradients and AdamW moments stay f32; each
 * step first casts the weights to an f16 copy (castF16, i.e. after the previous update), every dense
 * matmul reads its weight operand from that copy and rounds its f32 activation operands to f16 as it
 * loads them (tensor cores through subgroup matrices where the device has them, else f16-rounding
 * f32-math kernels), accumulating in f32 with the fp32 kernels' epilogues. LayerNorm, softmax,
 * attention, the loss and the optimizer stay f32; block-sparse matmuls keep their fp32 kernels.
 * Dynamic loss scaling (compiled/mixed.ts) scales the loss gradient, skips the update on overflow and
 * adapts the scale, all on the GPU; the step's result reports the scale and whether it was skipped.
 * A skipped step still counts as AdamW update t for the bias corrections of later steps (the host
 * submits the next step before it knows; PyTorch's GradScaler does not advance the optimizer's step).
 */
import type { Call, FlatEntry, Place, Schedule } from '@patchflow/dataflow-runtime';
import { EXIT_CODES, PatchflowError } from '@patchflow/tensor';
import {
  KernelRunner,
  adamw,
  adamwUniform,
  attentionBackward,
  attentionForward,
  blockSparseDw,
  blockSparseDx,
  blockSparseForward,
  castF16,
  DEFAULT_LOSS_SCALE,
  cdiv,
  defaultSgTile,
  lossScaleState,
  lossScaleUpdate,
  matmulSubgroup,
  type LossScaleConfig,
  type SgTile,
  colSum,
  crossEntropy,
  decayBits,
  defaultTile,
  embeddingBackward,
  embeddingCsr,
  embeddingForward,
  add,
  fill,
  GELU_WGSL,
  gradNorm,
  grid,
  layerNormBackward,
  layerNormForward,
  lossSum,
  makeKernel,
  matmul,
  positionBackward,
  rotaryTable,
  settle,
  withWritableInputs,
  type KernelSpec,
  type TileConfig,
} from '../compiled/index.js';

/** A failure of the GPU itself (device lost, an uncaptured error): the run stops; its last checkpoint stays. */
export class GpuRuntimeError extends PatchflowError {
  override name = 'GpuRuntimeError';
  override readonly exitCode = EXIT_CODES.device;
}

/** A model that does not fit the adapter: which buffer, how many bytes, and the limit (before step 1). */
export class GpuLimitError extends PatchflowError {
  override name = 'GpuLimitError';
}

/**
 * Steps a caller may keep submitted but unread (the trainer and the benchmark do): the host builds
 * the next step's inputs and encodes it while the GPU runs the earlier ones. The readback ring has
 * one staging buffer more.
 */
export const STEPS_IN_FLIGHT = 2;

const STORAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
const ALIGN = 256;
const align = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

interface Range {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** Parameters, gradients, AdamW moments (flat), decay bits and masks: what survives across steps and phases. */
export class GpuTrainingState {
  readonly params: GPUBuffer;
  readonly grads: GPUBuffer;
  readonly m: GPUBuffer;
  readonly v: GPUBuffer;
  readonly decay: GPUBuffer;
  /** 0/1 per element of the flat buffers (1 outside masked parameters); absent without masks. */
  mask?: GPUBuffer;
  /** Block masks (i32 [K/b, N/b]) of parameters on the block-sparse kernels. */
  readonly blockMasks = new Map<string, GPUBuffer>();
  /** f16 copy of the parameters (precision 'f16'; same element offsets), made by the first f16 program. */
  params16?: GPUBuffer;
  /** Dynamic loss scaling state [scale, clean steps, skipped steps, overflow] (precision 'f16'). */
  scaler?: GPUBuffer;
  private readonly byName: Map<string, FlatEntry>;

  constructor(
    readonly device: GPUDevice,
    readonly flat: FlatEntry[],
    readonly size: number,
  ) {
    const bytes = size * 4;
    checkBinding(device, 'the flat parameter buffer', bytes);
    this.params = device.createBuffer({ label: 'params', size: bytes, usage: STORAGE() });
    this.grads = device.createBuffer({ label: 'grads', size: bytes, usage: STORAGE() });
    this.m = device.createBuffer({ label: 'adam m', size: bytes, usage: STORAGE() });
    this.v = device.createBuffer({ label: 'adam v', size: bytes, usage: STORAGE() });
    const bits = decayBits(size, flat.filter((f) => f.decay).map((f) => [f.offset, f.offset + f.size] as [number, number]));
    this.decay = device.createBuffer({ label: 'decay bits', size: Math.max(16, bits.byteLength), usage: STORAGE() });
    put(device, this.decay, 0, bits);
    this.byName = new Map(flat.map((f) => [f.name, f]));
  }

  entry(name: string): FlatEntry {
    const e = this.byName.get(name);
    if (!e) throw new Error(`compiled step: no parameter ${name} in the flat layout`);
    return e;
  }

  range(space: 'param' | 'grad' | 'm' | 'v', name: string): Range {
    const e = this.entry(name);
    const buffer = { param: this.params, grad: this.grads, m: this.m, v: this.v }[space];
    return { buffer, offset: e.offset * 4, size: e.size * 4 };
  }

  /** Writes one of the flat buffers from per-parameter arrays (all parameters of the layout). */
  write(space: 'param' | 'm' | 'v', values: (name: string) => Float32Array): void {
    const all = new Float32Array(this.size);
    for (const e of this.flat) {
      const v = values(e.name);
      if (v.length !== e.size) throw new Error(`compiled step: ${space} of ${e.name} has ${v.length} values, expected ${e.size}`);
      all.set(v, e.offset);
    }
    put(this.device, { param: this.params, m: this.m, v: this.v }[space], 0, all);
  }

  /** Reads one of the flat buffers back, split by parameter. */
  async read(space: 'param' | 'grad' | 'm' | 'v'): Promise<Map<string, Float32Array>> {
    const buffer = { param: this.params, grad: this.grads, m: this.m, v: this.v }[space];
    const all = await readBuffer(this.device, buffer, this.size * 4);
    return new Map(this.flat.map((e) => [e.name, all.slice(e.offset, e.offset + e.size)]));
  }

  /**
   * Sets the masks of pruned parameters: `dense` as 0/1 per element (AdamW keeps the zeros; the
   * gradient is masked before the norm), `block` as the block mask of the block-sparse kernels.
   * Parameters not named keep 1.
   */
  setMasks(masks: Map<string, { mask: Uint8Array | Float32Array; blockMask?: Int32Array }>): void {
    if (!masks.size) return;
    const all = new Float32Array(this.size).fill(1);
    for (const [name, m] of masks) {
      const e = this.entry(name);
      for (let i = 0; i < e.size; i++) all[e.offset + i] = m.mask[i] ? 1 : 0;
      if (m.blockMask) {
        const buf = this.blockMasks.get(name) ?? this.device.createBuffer({ label: `block mask ${name}`, size: Math.max(16, Math.ceil(m.blockMask.byteLength / 16) * 16), usage: STORAGE() });
        put(this.device, buf, 0, m.blockMask);
        this.blockMasks.set(name, buf);
      }
    }
    this.mask ??= this.device.createBuffer({ label: 'mask', size: this.size * 4, usage: STORAGE() });
    put(this.device, this.mask, 0, all);
  }

  /** Creates the f16 weight copy and the loss-scale state (once; the scale survives phases). */
  ensureF16(lossScale: Pick<LossScaleConfig, 'init'>): void {
    checkBinding(this.device, 'the f16 weight copy', this.size * 2);
    this.params16 ??= this.device.createBuffer({ label: 'params f16', size: align(this.size * 2), usage: STORAGE() });
    if (!this.scaler) {
      this.scaler = this.device.createBuffer({ label: 'loss scale', size: 16, usage: STORAGE() });
      put(this.device, this.scaler, 0, lossScaleState(lossScale));
    }
  }

  /** Sets the loss scale (tests: a huge scale forces an overflow); keeps the skipped-step count. */
  async setLossScale(scale: number): Promise<void> {
    if (!this.scaler) throw new Error('compiled step: no loss scale (not an f16 state)');
    const cur = await readBuffer(this.device, this.scaler, 16);
    put(this.device, this.scaler, 0, new Float32Array([scale, 0, cur[2]!, 0]));
  }

  /** [scale, clean steps, skipped steps, overflow of the last step], or undefined outside f16. */
  async lossScale(): Promise<Float32Array | undefined> {
    return this.scaler ? readBuffer(this.device, this.scaler, 16) : undefined;
  }

  zeroMoments(): void {
    const zeros = new Float32Array(this.size);
    put(this.device, this.m, 0, zeros);
    put(this.device, this.v, 0, zeros);
  }

  destroy(): void {
    for (const b of [this.params, this.grads, this.m, this.v, this.decay, this.mask, this.params16, this.scaler, ...this.blockMasks.values()]) b?.destroy();
  }
}

/** queue.writeBuffer of a typed array (any ArrayBufferLike). */
function put(device: GPUDevice, buffer: GPUBuffer, offset: number, data: Float32Array | Int32Array | Uint32Array): void {
  device.queue.writeBuffer(buffer, offset, data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
}

/** Throws GpuLimitError when a buffer of `bytes`, bound whole, exceeds the device's limits. */
function checkBinding(device: GPUDevice, what: string, bytes: number): void {
  const l = device.limits;
  if (bytes > l.maxBufferSize) throw new GpuLimitError(`${what} needs ${fmtBytes(bytes)}, more than this adapter's maxBufferSize (${fmtBytes(l.maxBufferSize)}); use a smaller model or batch`);
  if (bytes > l.maxStorageBufferBindingSize) {
    throw new GpuLimitError(`${what} needs ${fmtBytes(bytes)} in one binding, more than this adapter's maxStorageBufferBindingSize (${fmtBytes(l.maxStorageBufferBindingSize)}); use a smaller model or batch`);
  }
}

export function fmtBytes(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

async function readBuffer(device: GPUDevice, buffer: GPUBuffer, bytes: number): Promise<Float32Array> {
  const staging = device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(buffer, 0, staging, 0, Math.ceil(bytes / 4) * 4);
  device.queue.submit([enc.finish()]);
  await settle(staging.mapAsync(GPUMapMode.READ));
  const out = new Float32Array(staging.getMappedRange().slice(0, bytes));
  staging.unmap();
  staging.destroy();
  return out;
}

/** out = gelu(x) or dy · gelu'(x), elementwise (the tanh form of @patchflow/tensor's gelu, as the matmul epilogues use it). */
function geluElementwise(n: number, backward: boolean): KernelSpec {
  const g = grid(cdiv(n, 256));
  const bindings = backward
    ? [{ name: 'dy', access: 'read' as const }, { name: 'x', access: 'read' as const }, { name: 'out', access: 'read_write' as const, overwrite: true }]
    : [{ name: 'x', access: 'read' as const }, { name: 'out', access: 'read_write' as const, overwrite: true }];
  return makeKernel({
    label: `gelu${backward ? ' backward' : ''} ${n}`,
    bindings,
    types: Object.fromEntries(bindings.map((b) => [b.name, 'array<f32>'])),
    workgroups: g.workgroups,
    body: `${GELU_WGSL}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let i = ${g.flat} * 256u + lid;
  if (i < ${n}u) { out[i] = ${backward ? 'dy[i] * geluGrad4(vec4<f32>(x[i])).x' : 'gelu4(vec4<f32>(x[i])).x'}; }
}`,
  });
}

/** out[i] *= mask[i]: a gradient masked before the norm (parameters pruned without the block kernels). */
function maskGrad(n: number): KernelSpec {
  const g = grid(cdiv(n, 256));
  return makeKernel({
    label: `mask gradient ${n}`,
    bindings: [
      { name: 'mask', access: 'read' },
      { name: 'out', access: 'read_write' },
    ],
    types: { mask: 'array<f32>', out: 'array<f32>' },
    workgroups: g.workgroups,
    body: `@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let i = ${g.flat} * 256u + lid;
  if (i < ${n}u) { out[i] = select(0.0, out[i], mask[i] != 0.0); }
}`,
  });
}

const runners = new WeakMap<GPUDevice, KernelRunner>();
/** One kernel runner (pipeline cache) per device: phases and programs share their compiled pipelines. */
function runnerFor(device: GPUDevice): KernelRunner {
  let r = runners.get(device);
  if (!r) runners.set(device, (r = new KernelRunner(device)));
  return r;
}

/** One micro-batch's inputs: token ids [B, K·T] and labels [B·T, K] (row-major, as the trainer builds them). */
export interface MicroBatch {
  ids: Int32Array;
  labels: Int32Array;
}

export interface StepResult {
  /** Mean loss over the step's micro-batches. */
  loss: number;
  /** Gradient norm before clipping (non-finite on a skipped f16 step). */
  gradNorm: number;
  /** f16: the loss scale after this step's update of it. */
  lossScale?: number;
  /** f16: the step's scaled gradients overflowed; the update was skipped and the scale halved. */
  skipped?: boolean;
  /** f16: steps skipped so far (this state). */
  skippedSteps?: number;
}

/** Numeric precision of a compiled step: 'f16' is mixed precision (see the module comment). */
export type StepPrecision = 'fp32' | 'f16';

export interface ProgramOptions {
  /** AdamW settings (optim.ts). */
  optim: { beta1: number; beta2: number; eps: number; weightDecay: number };
  /** The tile of a dense matmul call (autotuned), else defaultTile. */
  tileFor?: (c: Extract<Call, { op: 'matmul' }>) => TileConfig | undefined;
  /** Fill the arena with NaN before every step (tests: proves no kernel reads what it has not written). */
  poison?: boolean;
  /** 'fp32' (default) or 'f16' mixed precision (needs the device feature shader-f16). */
  precision?: StepPrecision;
  /**
   * f16 on tensor cores: the subgroup size of the device's subgroup matrices (it needs the feature
   * chromium-experimental-subgroup-matrix with an f16→f32 16×16×16 config); absent: the f16 matmuls
   * run on shader-f16 kernels that round to f16 and multiply in f32.
   */
  subgroupMatrix?: { subgroupSize: number; legacyMajorness?: boolean };
  /** The tile of a dense matmul call on subgroup matrices (autotuned), else defaultSgTile. */
  sgTileFor?: (c: Extract<Call, { op: 'matmul' }>) => SgTile | undefined;
  /** Dynamic loss scaling settings (f16). */
  lossScale?: Partial<LossScaleConfig>;
}

interface Dispatch {
  spec: KernelSpec;
  group: GPUBindGroup;
}

/** One phase's compiled step over a GpuTrainingState. */
export class StepProgram {
  readonly dispatchesPerStep: number;
  readonly arena: GPUBuffer;
  private readonly runner: KernelRunner;
  private readonly ids: GPUBuffer[] = [];
  private readonly labels: GPUBuffer[] = [];
  private readonly csrOffsets: GPUBuffer[] = [];
  private readonly csrPositions: GPUBuffer[] = [];
  private readonly loss: GPUBuffer;
  private readonly norm: GPUBuffer;
  private readonly uniform: GPUBuffer;
  private readonly scratch: GPUBuffer;
  private readonly extra: GPUBuffer[] = [];
  private readonly prologue: Dispatch[] = [];
  private readonly body: Dispatch[][] = [];
  private readonly epilogue: Dispatch[] = [];
  private readonly poisonDispatch?: Dispatch;
  private readonly staging: GPUBuffer[] = [];
  private readonly busy = new Set<GPUBuffer>();
  private readonly waiters: (() => void)[] = [];
  private readonly specs = new Map<string, KernelSpec>();
  readonly kernels: string[] = [];
  readonly f16: boolean;
  /** Dispatches at the end of the epilogue that update the weights (debug.skipOptimizer drops them). */
  private optimizerDispatches = 1;

  private constructor(
    readonly device: GPUDevice,
    readonly schedule: Schedule,
    readonly state: GpuTrainingState,
    readonly opts: ProgramOptions,
  ) {
    this.runner = runnerFor(device);
    this.f16 = opts.precision === 'f16';
    if (this.f16) {
      if (!device.features.has('shader-f16')) throw new GpuLimitError("precision 'f16' needs the WebGPU feature shader-f16, which this device lacks");
      state.ensureF16({ init: opts.lossScale?.init ?? DEFAULT_LOSS_SCALE.init });
    }
    const meta = schedule.meta;
    const accum = meta.gradAccum;
    // the arena is bound a tensor at a time: the buffer must fit maxBufferSize, each tensor a binding
    if (schedule.arenaBytes > device.limits.maxBufferSize) {
      throw new GpuLimitError(`the activation arena needs ${fmtBytes(schedule.arenaBytes)}, more than this adapter's maxBufferSize (${fmtBytes(device.limits.maxBufferSize)}); use a smaller model or batch`);
    }
    for (const [id, p] of Object.entries(schedule.places)) if (p.space === 'arena') checkBinding(device, `activation ${id}`, p.bytes);
    this.arena = device.createBuffer({ label: 'arena', size: Math.max(256, align(schedule.arenaBytes)), usage: STORAGE() });
    const idsBytes = meta.batch * meta.tokensPerRow * 4;
    const labelBytes = meta.batch * meta.positions * meta.patchSize * 4;
    for (let i = 0; i < accum; i++) {
      this.ids.push(device.createBuffer({ label: `ids ${i}`, size: align(idsBytes), usage: STORAGE() }));
      this.labels.push(device.createBuffer({ label: `labels ${i}`, size: align(labelBytes), usage: STORAGE() }));
      this.csrOffsets.push(device.createBuffer({ label: `csr offsets ${i}`, size: align((meta.model.vocabSize + 1) * 4), usage: STORAGE() }));
      this.csrPositions.push(device.createBuffer({ label: `csr positions ${i}`, size: align(idsBytes), usage: STORAGE() }));
    }
    this.loss = device.createBuffer({ label: 'loss', size: ALIGN * accum, usage: STORAGE() });
    this.norm = device.createBuffer({ label: 'grad norm', size: 256, usage: STORAGE() });
    this.uniform = device.createBuffer({ label: 'adamw step', size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    this.scratch = device.createBuffer({ label: 'scratch', size: align(this.scratchBytes()), usage: STORAGE() });
    for (let i = 0; i <= STEPS_IN_FLIGHT; i++) this.staging.push(device.createBuffer({ label: `staging ${i}`, size: align((accum + 6) * 4), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }));
    if (this.f16) {
      // the f16 weight copy of this step: after the previous step's update (and any upload)
      this.prologue.push(this.dispatch(castF16({ n: state.size }), [{ buffer: state.params, offset: 0, size: state.size * 4 }, { buffer: state.params16!, offset: 0, size: state.size * 2 }]));
    }
    for (const c of schedule.prologue) this.prologue.push(...this.lower(c, 0));
    for (let i = 0; i < accum; i++) this.body.push(schedule.body.flatMap((c) => this.lower(c, i)));
    for (const c of schedule.epilogue) this.epilogue.push(...this.lower(c, 0));
    if (this.f16) this.optimizerDispatches = 2; // adamw, then the loss-scale update
    if (opts.poison) {
      const words = this.arena.size / 4;
      const spec = makeKernel({
        label: `poison arena ${words}`,
        bindings: [{ name: 'out', access: 'read_write' }],
        types: { out: 'array<u32>' },
        workgroups: grid(cdiv(words, 256)).workgroups,
        body: `@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let i = ${grid(cdiv(words, 256)).flat} * 256u + lid;
  if (i < ${words}u) { out[i] = 0x7fc00000u; }
}`,
      });
      this.poisonDispatch = { spec, group: this.runner.bind(spec, [this.arena]) };
    }
    this.dispatchesPerStep = this.prologue.length + this.body.reduce((a, b) => a + b.length, 0) + this.epilogue.length;
  }

  /** Builds the program: pipelines compiled (WGSL errors reported), buffers and bind groups created. */
  static async create(device: GPUDevice, schedule: Schedule, state: GpuTrainingState, opts: ProgramOptions): Promise<StepProgram> {
    device.pushErrorScope('validation');
    const p = new StepProgram(device, schedule, state, opts);
    for (const spec of p.specs.values()) await p.runner.pipelineAsync(spec);
    const err = await settle(device.popErrorScope());
    if (err) throw new Error(`compiled step: WebGPU validation failed while building the step: ${err.message}`);
    return p;
  }

  /** Scratch floats the multi-stage kernels need (one shared buffer: calls run one after another). */
  private scratchBytes(): number {
    const m = this.schedule.meta;
    let floats = m.batch * m.model.nHead * m.positions; // attention delta
    for (const c of [...this.schedule.body, ...this.schedule.epilogue]) {
      if (c.op === 'colsum') floats = Math.max(floats, colSum({ m: c.m, n: c.n }).scratchFloats);
      if (c.op === 'layernorm-grad') floats = Math.max(floats, layerNormBackward({ rows: c.rows, cols: c.cols }).scratchFloats);
      if (c.op === 'grad-norm') floats = Math.max(floats, gradNorm({ n: this.state.size, gradClip: c.clip }).scratchFloats);
    }
    return floats * 4;
  }

  private place(id: string): Place {
    const p = this.schedule.places[id];
    if (!p) throw new Error(`compiled step: tensor ${id} has no place in the memory plan`);
    return p;
  }

  /** The buffer range of tensor `id` for micro-batch `micro`. */
  private range(id: string, micro: number): Range {
    const p = this.place(id);
    switch (p.space) {
      case 'param':
      case 'grad':
      case 'm':
      case 'v':
        return this.state.range(p.space, p.param);
      case 'arena':
        return { buffer: this.arena, offset: p.offset, size: Math.ceil(p.bytes / 4) * 4 };
      case 'ids':
        return { buffer: this.ids[micro]!, offset: 0, size: this.ids[micro]!.size };
      case 'labels':
        return { buffer: this.labels[micro]!, offset: 0, size: this.labels[micro]!.size };
      case 'loss':
        return { buffer: this.loss, offset: micro * ALIGN, size: 4 };
      case 'norm':
        return { buffer: this.norm, offset: 0, size: 8 };
      case 'mask': {
        const b = this.state.blockMasks.get(p.param);
        if (!b) throw new Error(`compiled step: no block mask for ${p.param}`);
        return { buffer: b, offset: 0, size: b.size };
      }
    }
  }

  /** Binds `spec` (its writable-inputs variant where one buffer is both read and written) and records it. */
  private dispatch(spec: KernelSpec, resources: Range[]): Dispatch {
    const writes = new Set(resources.filter((_, i) => spec.bindings[i]!.access === 'read_write').map((r) => r.buffer));
    const clash = resources.some((r, i) => spec.bindings[i]!.access === 'read' && writes.has(r.buffer));
    const s = clash ? withWritableInputs(spec) : spec;
    this.specs.set(s.key, s);
    if (!this.kernels.includes(s.label)) this.kernels.push(s.label);
    return { spec: s, group: this.runner.bind(s, resources) };
  }

  private tile(c: Extract<Call, { op: 'matmul' }>): TileConfig {
    return this.opts.tileFor?.(c) ?? defaultTile(c.m, c.n);
  }

  /** A call's dispatches for micro-batch `micro`. */
  private lower(c: Call, micro: number): Dispatch[] {
    const r = (id: string) => this.range(id, micro);
    const scratch = (floats: number): Range => ({ buffer: this.scratch, offset: 0, size: floats * 4 });
    switch (c.op) {
      case 'embed': {
        const spec = embeddingForward({ rows: c.rows, t: c.t, d: c.d, vocab: c.vocab, k: c.k, positions: !!c.pos });
        return [this.dispatch(spec, [r(c.ids), r(c.table), ...(c.pos ? [r(c.pos)] : []), r(c.out)])];
      }
      case 'layernorm': {
        const stats = r(c.stats);
        const half = align(c.rows * 4);
        const spec = layerNormForward({ rows: c.rows, cols: c.cols });
        return [this.dispatch(spec, [r(c.x), r(c.gain), r(c.bias), r(c.out), { buffer: stats.buffer, offset: stats.offset, size: c.rows * 4 }, { buffer: stats.buffer, offset: stats.offset + half, size: c.rows * 4 }])];
      }
      case 'matmul': {
        if (c.blockSparse) {
          const bs = c.blockSparse;
          const mask = r(bs.mask);
          if (bs.part === 'forward') {
            const spec = blockSparseForward({ rows: c.m, k: c.k, n: c.n, blockSize: bs.block, bias: !!c.bias });
            return [this.dispatch(spec, [r(c.a), r(c.b), mask, ...(c.bias ? [r(c.bias)] : []), r(c.out)])];
          }
          if (bs.part === 'dx') {
            // dx [rows, in] = dy [rows, out] · (W ⊙ M)ᵀ with W [in, out]
            const spec = blockSparseDx({ rows: c.m, k: c.n, n: c.k, blockSize: bs.block });
            return [this.dispatch(spec, [r(c.a), r(c.b), mask, r(c.out)])];
          }
          const spec = blockSparseDw({ rows: c.k, k: c.m, n: c.n, blockSize: bs.block, accumulate: c.accumulate });
          return [this.dispatch(spec, [r(c.a), r(c.b), mask, r(c.out)])];
        }
        const shape = {
          m: c.m, n: c.n, k: c.k, transA: c.transA, transB: c.transB,
          bias: !!c.bias, gelu: c.gelu ? ('both' as const) : ('none' as const), geluBackward: !!c.geluBackward, residual: !!c.residual, accumulate: c.accumulate,
        };
        let spec: KernelSpec;
        const res: Range[] = [];
        if (this.f16) {
          // weights from the f16 copy (bound whole, offset in elements), activations rounded on load
          const a = this.f16Operand(c.a, micro);
          const b = this.f16Operand(c.b, micro);
          const mixed = { ...shape, aType: a.type, bType: b.type, ...(a.offset ? { offsetA: a.offset } : {}), ...(b.offset ? { offsetB: b.offset } : {}) };
          spec = this.opts.subgroupMatrix
            ? matmulSubgroup({ ...mixed, ...this.opts.subgroupMatrix, sgTile: this.opts.sgTileFor?.(c) ?? defaultSgTile(c.m, c.n, c.k) })
            : matmul({ ...mixed, roundF16: true, tile: this.tile(c) });
          res.push(a.range, b.range);
        } else {
          spec = matmul({ ...shape, tile: this.tile(c) });
          res.push(r(c.a), r(c.b));
        }
        if (c.bias) res.push(r(c.bias));
        if (c.residual) res.push(r(c.residual));
        if (c.geluBackward) res.push(r(c.geluBackward));
        res.push(r(c.out));
        if (c.gelu) res.push(r(c.gelu.pre));
        return [this.dispatch(spec, res)];
      }
      case 'add':
        return [this.dispatch(add({ n: c.n }), [r(c.a), r(c.b), r(c.out)])];
      case 'gelu':
        return [this.dispatch(geluElementwise(c.n, false), [r(c.x), r(c.out)])];
      case 'gelu-grad':
        return [this.dispatch(geluElementwise(c.n, true), [r(c.dy), r(c.x), r(c.out)])];
      case 'attention': {
        const spec = attentionForward({ batch: c.batch, t: c.t, heads: c.heads, headDim: c.headDim, rotary: c.rotary });
        return [this.dispatch(spec, [r(c.qkv), ...(c.rotary ? [this.rotaryTable(c.t, c.headDim)] : []), r(c.out), r(c.lse)])];
      }
      case 'attention-grad': {
        const k = attentionBackward({ batch: c.batch, t: c.t, heads: c.heads, headDim: c.headDim, rotary: c.rotary });
        const delta = scratch(c.batch * c.heads * c.t);
        const table = c.rotary ? [this.rotaryTable(c.t, c.headDim)] : [];
        const common = [r(c.qkv), r(c.dout), r(c.lse), delta, ...table, r(c.dqkv)];
        return [this.dispatch(k.delta, [r(c.out), r(c.dout), delta]), this.dispatch(k.dkdv, common), this.dispatch(k.dq, common)];
      }
      case 'xent': {
        const spec = crossEntropy({ rows: c.rows, vocab: c.vocab, k: c.k, smoothing: c.smoothing, gradScale: c.gradScale, lossScale: this.f16 });
        const sum = lossSum({ rows: c.rows, scale: c.lossScale });
        return [this.dispatch(spec, [r(c.logits), r(c.labels), r(c.rowLoss), ...this.scalerRange()]), this.dispatch(sum, [r(c.rowLoss), r(c.loss)])];
      }
      case 'colsum': {
        const k = colSum({ m: c.m, n: c.n, accumulate: c.accumulate });
        const part = scratch(k.scratchFloats);
        return [this.dispatch(k.partial, [r(c.x), part]), this.dispatch(k.reduce, [part, r(c.out)])];
      }
      case 'layernorm-grad': {
        const k = layerNormBackward({ rows: c.rows, cols: c.cols, accumulate: c.accumulate, accumulateParams: c.accumulateParams });
        const stats = r(c.stats);
        const half = align(c.rows * 4);
        const mean = { buffer: stats.buffer, offset: stats.offset, size: c.rows * 4 };
        const rstd = { buffer: stats.buffer, offset: stats.offset + half, size: c.rows * 4 };
        const part = scratch(k.scratchFloats);
        return [
          this.dispatch(k.dx, [r(c.dy), r(c.x), r(c.gain), mean, rstd, r(c.dx)]),
          this.dispatch(k.partial, [r(c.dy), r(c.x), mean, rstd, part]),
          this.dispatch(k.reduce, [part, r(c.dgain), r(c.dbias)]),
        ];
      }
      case 'positions-grad':
        return [this.dispatch(positionBackward({ rows: c.rows, t: c.t, d: c.d, accumulate: c.accumulate }), [r(c.dy), r(c.out)])];
      case 'embed-grad': {
        const spec = embeddingBackward({ rows: c.rows, t: c.t, d: c.d, vocab: c.vocab, k: c.k, accumulate: c.accumulate });
        const off = this.csrOffsets[micro]!;
        const pos = this.csrPositions[micro]!;
        return [this.dispatch(spec, [{ buffer: off, offset: 0, size: off.size }, { buffer: pos, offset: 0, size: pos.size }, r(c.dy), r(c.out)])];
      }
      case 'mask-grad': {
        const e = this.state.entry(c.param);
        if (!this.state.mask) throw new Error(`compiled step: ${c.param} is masked but no masks were set`);
        return [this.dispatch(maskGrad(c.n), [{ buffer: this.state.mask, offset: e.offset * 4, size: e.size * 4 }, this.state.range('grad', c.param)])];
      }
      case 'zero-grads':
        return [this.dispatch(fill({ n: this.state.size }), [{ buffer: this.state.grads, offset: 0, size: this.state.size * 4 }])];
      case 'grad-norm': {
        const k = gradNorm({ n: this.state.size, gradClip: c.clip, lossScale: this.f16 });
        const part = scratch(k.scratchFloats);
        return [
          this.dispatch(k.partial, [{ buffer: this.state.grads, offset: 0, size: this.state.size * 4 }, part]),
          this.dispatch(k.reduce, [part, { buffer: this.norm, offset: 0, size: 8 }, ...this.scalerRange()]),
        ];
      }
      case 'adamw': {
        const masked = c.masked.length > 0;
        if (masked && !this.state.mask) throw new Error('compiled step: AdamW is masked but no masks were set');
        const spec = adamw({ n: this.state.size, ...this.opts.optim, masked });
        const all = (b: GPUBuffer) => ({ buffer: b, offset: 0, size: this.state.size * 4 });
        return [
          this.dispatch(spec, [
            all(this.state.params), all(this.state.grads), all(this.state.m), all(this.state.v),
            { buffer: this.state.decay, offset: 0, size: this.state.decay.size },
            { buffer: this.norm, offset: 0, size: 8 },
            { buffer: this.uniform, offset: 0, size: 16 },
            ...(masked ? [all(this.state.mask!)] : []),
          ]),
          ...(this.f16 ? [this.dispatch(lossScaleUpdate(this.opts.lossScale), this.scalerRange())] : []),
        ];
      }
    }
  }

  /** The loss-scale state as a binding (f16), else nothing. */
  private scalerRange(): Range[] {
    return this.f16 ? [{ buffer: this.state.scaler!, offset: 0, size: 16 }] : [];
  }

  /** A dense matmul operand in f16 mode: a weight from the f16 copy, anything else as it is (f32, rounded on load). */
  private f16Operand(id: string, micro: number): { range: Range; type: 'f16' | 'f32'; offset: number } {
    const p = this.place(id);
    if (p.space === 'param') {
      const e = this.state.entry(p.param);
      return { range: { buffer: this.state.params16!, offset: 0, size: this.state.size * 2 }, type: 'f16', offset: e.offset };
    }
    return { range: this.range(id, micro), type: 'f32', offset: 0 };
  }

  private tables = new Map<string, Range>();
  private rotaryTable(t: number, headDim: number): Range {
    const key = `${t}x${headDim}`;
    let r = this.tables.get(key);
    if (!r) {
      const data = rotaryTable(t, headDim);
      const buffer = this.device.createBuffer({ label: `rotary ${key}`, size: align(data.byteLength), usage: STORAGE() });
      put(this.device, buffer, 0, data);
      this.extra.push(buffer);
      r = { buffer, offset: 0, size: data.byteLength };
      this.tables.set(key, r);
    }
    return r;
  }

  private async stagingBuffer(): Promise<GPUBuffer> {
    for (;;) {
      const free = this.staging.find((b) => !this.busy.has(b));
      if (free) {
        this.busy.add(free);
        return free;
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Writes the micro-batches' ids, labels and embedding CSR index, and the AdamW uniform of step `t`. */
  private upload(micro: MicroBatch[], lr: number, t: number): void {
    const vocab = this.schedule.meta.model.vocabSize;
    micro.forEach((mb, i) => {
      put(this.device, this.ids[i]!, 0, mb.ids);
      put(this.device, this.labels[i]!, 0, mb.labels);
      const csr = embeddingCsr(mb.ids, vocab);
      put(this.device, this.csrOffsets[i]!, 0, csr.offsets);
      put(this.device, this.csrPositions[i]!, 0, csr.positions);
    });
    put(this.device, this.uniform, 0, adamwUniform(this.opts.optim, lr, t));
  }

  /**
   * Runs one optimizer step: writes the micro-batches' inputs and the AdamW uniform (learning rate
   * `lr`, update `t`, 1-based), encodes every dispatch into one pass, submits, and returns a promise of
   * the step's loss and gradient norm as `done` (it resolves once the GPU has finished the step; the
   * next step can be submitted before).
   */
  async submit(micro: MicroBatch[], lr: number, t: number, debug: { skipOptimizer?: boolean } = {}): Promise<{ done: Promise<StepResult> }> {
    const meta = this.schedule.meta;
    if (micro.length !== meta.gradAccum) throw new Error(`compiled step: ${micro.length} micro-batches, expected ${meta.gradAccum}`);
    this.upload(micro, lr, t);
    const staging = await this.stagingBuffer();
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    const run = (d: Dispatch) => {
      pass.setPipeline(this.runner.pipeline(d.spec));
      pass.setBindGroup(0, d.group);
      pass.dispatchWorkgroups(...d.spec.workgroups);
    };
    for (const d of this.prologue) run(d);
    for (const b of this.body) {
      if (this.poisonDispatch) run(this.poisonDispatch);
      for (const d of b) run(d);
    }
    for (const d of debug.skipOptimizer ? this.epilogue.slice(0, -this.optimizerDispatches) : this.epilogue) run(d);
    pass.end();
    micro.forEach((_, i) => enc.copyBufferToBuffer(this.loss, i * ALIGN, staging, i * 4, 4));
    enc.copyBufferToBuffer(this.norm, 0, staging, micro.length * 4, 8);
    if (this.f16) enc.copyBufferToBuffer(this.state.scaler!, 0, staging, (micro.length + 2) * 4, 16);
    this.device.queue.submit([enc.finish()]);
    const done = (async () => {
      try {
        await settle(staging.mapAsync(GPUMapMode.READ));
        const v = new Float32Array(staging.getMappedRange().slice(0, (micro.length + 6) * 4));
        staging.unmap();
        let loss = 0;
        for (let i = 0; i < micro.length; i++) loss += v[i]!;
        const out: StepResult = { loss: loss / micro.length, gradNorm: v[micro.length]! };
        if (this.f16 && !debug.skipOptimizer) {
          const s = micro.length + 2;
          Object.assign(out, { lossScale: v[s]!, skipped: v[s + 3]! !== 0, skippedSteps: v[s + 2]! });
        }
        return out;
      } finally {
        this.busy.delete(staging);
        this.waiters.shift()?.();
      }
    })();
    return { done };
  }

  /**
   * Times every dispatch of one step (each in a compute pass of its own, with timestamp queries; the
   * step's update is applied as usual). Needs the device feature 'timestamp-query'. Returns the
   * GPU milliseconds per dispatch, in order, with the kernel's label.
   */
  async profile(micro: MicroBatch[], lr: number, t: number): Promise<{ label: string; ms: number }[]> {
    if (!this.device.features.has('timestamp-query')) throw new Error('profiling needs the timestamp-query feature');
    this.upload(micro, lr, t);
    const all = [...this.prologue, ...this.body.flat(), ...this.epilogue];
    const count = 2 * all.length;
    const qs = this.device.createQuerySet({ type: 'timestamp', count });
    const resolve = this.device.createBuffer({ size: count * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = this.device.createBuffer({ size: count * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    all.forEach((d, i) => {
      const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      pass.setPipeline(this.runner.pipeline(d.spec));
      pass.setBindGroup(0, d.group);
      pass.dispatchWorkgroups(...d.spec.workgroups);
      pass.end();
    });
    enc.resolveQuerySet(qs, 0, count, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, count * 8);
    this.device.queue.submit([enc.finish()]);
    await settle(read.mapAsync(GPUMapMode.READ));
    const ts = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    [qs, resolve, read].forEach((x) => x.destroy());
    return all.map((d, i) => ({ label: d.spec.label, ms: Number(ts[2 * i + 1]! - ts[2 * i]!) / 1e6 }));
  }

  destroy(): void {
    for (const b of [this.arena, ...this.ids, ...this.labels, ...this.csrOffsets, ...this.csrPositions, this.loss, this.norm, this.uniform, this.scratch, ...this.staging, ...this.extra]) b.destroy();
  }
}
