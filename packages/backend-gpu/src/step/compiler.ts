/// <reference types="@webgpu/types" />
/**
 * The `webgpu` backend's step compiler (registered with @patchflow/trainer): builds the dataflow
 * runtime's graph of the phase's step from the model description (the same graph `patchflow
 * simulate` costs), lowers it (lowerStep: fusions and a memory plan) and binds it to this package's
 * WGSL kernels (StepProgram). Weights and AdamW moments move between the tfjs model and the GPU's
 * flat buffers at phase boundaries and before evaluations and checkpoints.
 */
import { buildStepGraph, describeSchedule, lowerStep, type Schedule } from '@patchflow/dataflow-runtime';
import { registerStepCompiler, type AdamW, type Batch, type CompileRequest, type CompiledStep, type GPT, type StepCompiler } from '@patchflow/trainer';
import { createDawnGpu, type GpuLike } from '../gpu.js';
import { autotune, settle, subgroupMatrixSyntax, type BenchShape, type SgTile, type TileConfig } from '../compiled/index.js';
import { GpuRuntimeError, GpuTrainingState, STEPS_IN_FLIGHT, StepProgram, fmtBytes, type ProgramOptions, type StepPrecision } from './program.js';
import { F16_PROBE_FLAGS, PrecisionError, f16Support, type F16Support } from './precision.js';

/** Dawn toggles of the compiled step's device: its kernels never rely on bounds clamping or zeroed workgroup memory; profiles want unquantized timestamps. */
export const COMPUTE_DAWN_FLAGS = ['enable-dawn-features=allow_unsafe_apis,disable_robustness,disable_workgroup_init', 'disable-dawn-features=timestamp_quantization'];
/** The same plus the toggle that exposes shader-f16 (and with it subgroup matrices) on NVIDIA's Vulkan driver: asked for only by f16 steps. */
export const F16_DAWN_FLAGS = [`${F16_PROBE_FLAGS[0]},disable_robustness,disable_workgroup_init`, 'disable-dawn-features=timestamp_quantization'];

interface ComputeDevice {
  /** Held for the device's lifetime: Dawn crashes when its instance is garbage-collected. */
  gpu: GpuLike;
  device: GPUDevice;
  /** A software adapter (lavapipe, SwiftShader): right for tests, not for tuning. */
  fallback: boolean;
  /** Adapter facts for reports. */
  info: { vendor: string; architecture: string; device: string; description: string };
  /** Set when the device was lost or reported an uncaptured error. */
  failure?: string;
  /** What the device offers f16 steps (devices created for f16 only; fp32 devices: undefined). */
  f16?: F16Support;
}

const computeDevices = new Map<StepPrecision, Promise<ComputeDevice>>();

/**
 * The compute device the compiled steps of `precision` run on (one per precision and process), with
 * the adapter's limits. An f16 device is created with the Dawn toggles f16 needs and the features
 * shader-f16, subgroups and chromium-experimental-subgroup-matrix where the adapter has them; an fp32
 * device never asks for them.
 */
export function getComputeDevice(precision: StepPrecision = 'fp32'): Promise<ComputeDevice> {
  let computeDevice = computeDevices.get(precision);
  if (computeDevice) return computeDevice;
  computeDevice = (async () => {
    const f16 = precision === 'f16';
    const gpu = await createDawnGpu(f16 ? F16_DAWN_FLAGS : COMPUTE_DAWN_FLAGS);
    const adapter = (await gpu.requestAdapter({ powerPreference: 'high-performance' })) as GPUAdapter | null;
    if (!adapter) throw new GpuRuntimeError('the compiled step found no WebGPU adapter');
    const l = adapter.limits;
    const support = f16 ? f16Support([...adapter.features], (adapter as { info?: unknown }).info as never) : undefined;
    const wanted = ['timestamp-query', 'shader-f16', ...(support?.subgroupMatrix ? ['subgroups', 'chromium-experimental-subgroup-matrix'] : [])] as GPUFeatureName[];
    const features = wanted.filter((f) => adapter.features.has(f));
    const device = await adapter.requestDevice({
      requiredFeatures: features,
      requiredLimits: {
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxBufferSize: l.maxBufferSize,
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
        maxComputeWorkgroupSizeY: l.maxComputeWorkgroupSizeY,
        maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
        maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      },
    });
    const ai = (adapter as GPUAdapter & { info?: GPUAdapterInfo & { isFallbackAdapter?: boolean } }).info;
    const cd: ComputeDevice = {
      gpu,
      device,
      fallback: !!(ai?.isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter),
      info: { vendor: ai?.vendor ?? '', architecture: ai?.architecture ?? '', device: ai?.device ?? '', description: ai?.description ?? '' },
      ...(support ? { f16: support } : {}),
    };
    void device.lost.then((info) => {
      cd.failure ??= `the GPU device was lost (${info.reason}${info.message ? `: ${info.message}` : ''})`;
      if (computeDevices.get(precision) === p) computeDevices.delete(precision);
    });
    device.onuncapturederror = (e) => {
      cd.failure ??= `the GPU reported an error: ${(e as GPUUncapturedErrorEvent).error.message}`;
    };
    return cd;
  })();
  const p = computeDevice;
  computeDevices.set(precision, p);
  p.catch(() => {
    if (computeDevices.get(precision) === p) computeDevices.delete(precision);
  });
  return p;
}

/** GPU state per model: the flat buffers survive from phase to phase. */
const states = new WeakMap<GPT, GpuTrainingState>();

function checkFailure(cd: ComputeDevice): void {
  if (cd.failure) throw new GpuRuntimeError(`${cd.failure}; the run stops here (its last checkpoint is kept)`);
}

class WebGpuCompiledStep implements CompiledStep {
  readonly description: string;
  readonly stepsInFlight = STEPS_IN_FLIGHT;

  constructor(
    private readonly cd: ComputeDevice,
    private readonly program: StepProgram,
    private readonly state: GpuTrainingState,
    private readonly model: GPT,
    private readonly optimizer: AdamW,
    private readonly schedule: Schedule,
    f16Note?: string,
  ) {
    const s = schedule;
    this.description =
      `${f16Note ? `${f16Note}; ` : ''}${program.dispatchesPerStep} dispatches per step (${s.body.length} fused calls per micro-batch from ${s.fusedOps.reduce((a, f) => a + f.length, 0)} graph ops), ` +
      `${program.kernels.length} kernels, activation arena ${fmtBytes(s.arenaBytes)}, parameters ${fmtBytes(s.flatSize * 4)} × 4 (weights, gradients, moments)`;
  }

  async load(): Promise<void> {
    checkFailure(this.cd);
    const w = await this.model.exportWeights();
    this.state.write('param', (n) => w[n]!.data);
    const opt = await this.optimizer.exportState();
    this.state.write('m', (n) => opt.tensors[`m.${n}`]!.data);
    this.state.write('v', (n) => opt.tensors[`v.${n}`]!.data);
  }

  async submit(batches: Batch[], lr: number, t: number) {
    checkFailure(this.cd);
    const r = await this.program.submit(
      batches.map((b) => ({ ids: b.inputs, labels: b.labels })),
      lr,
      t,
    );
    return {
      done: r.done.then((x) => {
        checkFailure(this.cd);
        return x;
      }),
    };
  }

  async store(): Promise<void> {
    checkFailure(this.cd);
    const [w, m, v] = await Promise.all([this.state.read('param'), this.state.read('m'), this.state.read('v')]);
    const weights: Record<string, { shape: number[]; data: Float32Array }> = {};
    const moments: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const e of this.state.flat) {
      weights[e.name] = { shape: e.shape, data: w.get(e.name)! };
      moments[`m.${e.name}`] = { shape: e.shape, data: m.get(e.name)! };
      moments[`v.${e.name}`] = { shape: e.shape, data: v.get(e.name)! };
    }
    this.model.loadWeights(weights);
    this.optimizer.importState(this.optimizer.t, moments);
  }

  /** Gradients of one step's micro-batches without the update (tests compare them with the eager step's). */
  async gradients(batches: Batch[]): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
    const r = await this.program.submit(batches.map((b) => ({ ids: b.inputs, labels: b.labels })), 0, 1, { skipOptimizer: true });
    const { loss } = await r.done;
    const grads = await this.state.read('grad');
    const scale = (await this.state.lossScale())?.[0];
    // f16: the gradients are scaled by the loss scale
    if (scale !== undefined) for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i]! /= scale;
    return { loss, grads };
  }

  /** GPU time of every dispatch of one step (see StepProgram.profile). */
  profile(batches: Batch[], lr: number, t: number): Promise<{ label: string; ms: number }[]> {
    return this.program.profile(batches.map((b) => ({ ids: b.inputs, labels: b.labels })), lr, t);
  }

  /** The lowered schedule, one line per call. */
  describe(): string[] {
    return describeSchedule(this.schedule);
  }

  dispose(): void {
    this.program.destroy();
  }
}

export interface CompileOptions extends Pick<ProgramOptions, 'poison' | 'lossScale'> {
  /** f16: use subgroup-matrix (tensor-core) kernels where the device has them (default true); false: the shader-f16 fallback kernels. */
  tensorCores?: boolean;
  /**
   * Time every tile candidate for each distinct dense matmul of the step and use the fastest (cached
   * per process): true, false, or 'auto' (default: on real GPUs, not on software adapters such as
   * lavapipe, where it would take minutes).
   */
  autotune?: boolean | 'auto';
}

const tuned = new Map<string, TileConfig | undefined>();
const shapeKey = (c: { m: number; n: number; k: number; transA: boolean; transB: boolean }) => `${c.m}x${c.n}x${c.k}${c.transA ? 'T' : 'N'}${c.transB ? 'T' : 'N'}`;

/** Autotunes the schedule's distinct dense matmul shapes (those not tuned yet in this process). */
async function tuneSchedule(device: GPUDevice, schedule: Schedule): Promise<void> {
  const shapes = new Map<string, BenchShape>();
  for (const c of schedule.body) {
    if (c.op !== 'matmul' || c.blockSparse) continue;
    const key = shapeKey(c);
    if (!tuned.has(key) && !shapes.has(key)) shapes.set(key, { m: c.m, n: c.n, k: c.k, transA: c.transA, transB: c.transB });
  }
  if (!shapes.size) return;
  const results = await autotune(device, { shapes: [...shapes.values()], reps: 10, warmup: 2 });
  [...shapes.keys()].forEach((key, i) => tuned.set(key, results[i]!.tile));
}

/** The tiles autotuned so far, by shape (m x n x k, A and B layouts). */
export function tunedTiles(): Record<string, TileConfig | undefined> {
  return Object.fromEntries(tuned);
}

/** Compiles a phase's step (what the trainer calls through the registered StepCompiler). */
export async function compileWebGpuStep(req: CompileRequest, opts: CompileOptions = {}): Promise<WebGpuCompiledStep | { reason: string }> {
  const { config, model, optimizer, phase, contribution } = req;
  const K = contribution.patchSize ?? 1;
  const L = phase.layout;
  if (L.positions * K !== L.inputTokens || L.labelsPerPosition !== K) {
    return { reason: `its row layout (${L.inputTokens} tokens, ${L.positions} positions, ${L.labelsPerPosition} labels each) is neither token- nor patch-level` };
  }
  const sp = contribution.sparsity;
  const graph = buildStepGraph(model.config, {
    batch: config.batchSize,
    seqLen: L.positions,
    patchSize: K,
    gradAccum: config.gradAccum,
    precision: 'fp32',
    ...(sp && sp.masks.size ? { sparsity: sp.sparsity, sparsityPattern: sp.pattern } : {}),
  });
  const masked: Record<string, 'block' | 'dense'> = {};
  for (const [name, m] of sp?.masks ?? []) masked[name] = m.block ? 'block' : 'dense';
  const schedule = lowerStep(graph, { gradClip: config.optim.gradClip, labelSmoothing: contribution.labelSmoothing, masked });
  const precision: StepPrecision = (config as { precision?: StepPrecision }).precision ?? 'fp32';
  const cd = await getComputeDevice(precision);
  checkFailure(cd);
  let subgroupMatrix: ProgramOptions['subgroupMatrix'];
  if (precision === 'f16') {
    const f = cd.f16!;
    if (!f.shaderF16) throw new PrecisionError(`--precision f16 (config precision: 'f16') needs the WebGPU feature shader-f16: ${f.reason}`);
    if (f.subgroupMatrix && opts.tensorCores !== false && process.env.PATCHFLOW_F16_KERNELS !== 'fallback') {
      subgroupMatrix = { subgroupSize: f.subgroupSize!, ...((await subgroupMatrixSyntax(cd.device)) === 'legacy' ? { legacyMajorness: true } : {}) };
    }
  }
  let state = states.get(model);
  if (!state) {
    state = new GpuTrainingState(cd.device, schedule.flat, schedule.flatSize);
    states.set(model, state);
  }
  if (sp) state.setMasks(new Map([...sp.masks].map(([n, m]) => [n, { mask: m.mask, ...(m.block ? { blockMask: m.block.mask } : {}) }])));
  const auto = opts.autotune ?? 'auto';
  // the fp32 tiles are tuned for fp32 and shader-f16 matmuls; subgroup-matrix matmuls use their own
  const tune = (auto === 'auto' ? !cd.fallback : auto) && !subgroupMatrix;
  if (tune) await tuneSchedule(cd.device, schedule);
  const program = await StepProgram.create(cd.device, schedule, state, {
    optim: config.optim,
    ...(opts.poison ? { poison: true } : {}),
    ...(opts.lossScale ? { lossScale: opts.lossScale } : {}),
    tileFor: (c) => (tune ? tuned.get(shapeKey(c)) : undefined),
    precision,
    ...(subgroupMatrix ? { subgroupMatrix } : {}),
    ...(sgTileOverride() ? { sgTileFor: () => sgTileOverride() } : {}),
  });
  const f16Note =
    precision !== 'f16'
      ? undefined
      : subgroupMatrix
        ? `f16 mixed precision: matmuls on subgroup matrices (tensor cores), f32 master weights, dynamic loss scaling`
        : `f16 mixed precision on shader-f16 fallback kernels (f16-rounded operands, f32 math; no tensor cores: ${opts.tensorCores === false ? 'turned off' : cd.f16!.reason}), dynamic loss scaling`;
  return new WebGpuCompiledStep(cd, program, state, model, optimizer, schedule, f16Note);
}

/**
 * PATCHFLOW_SG_TILE='{"wm":2,"wn":2,"rt":4,"ct":2,"bk":32}': one subgroup-matrix tile for every f16
 * matmul of the step (device experiments); PATCHFLOW_F16_KERNELS=fallback: the shader-f16 kernels.
 */
export function sgTileOverride(): SgTile | undefined {
  const v = process.env.PATCHFLOW_SG_TILE;
  if (!v) return undefined;
  try {
    return JSON.parse(v) as SgTile;
  } catch {
    throw new PrecisionError(`PATCHFLOW_SG_TILE is not JSON: ${v}`);
  }
}

/** Waits for the compute device's queue to drain (tests, benchmarks). */
export async function computeIdle(): Promise<void> {
  if (!computeDevices.size) await getComputeDevice();
  for (const p of computeDevices.values()) {
    const cd = await p;
    await settle(cd.device.queue.onSubmittedWorkDone());
  }
}

export const webgpuStepCompiler: StepCompiler = { compile: (req) => compileWebGpuStep(req) };

export { WebGpuCompiledStep };

registerStepCompiler('webgpu', webgpuStepCompiler);
