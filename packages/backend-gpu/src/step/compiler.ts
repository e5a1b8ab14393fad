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
import { autotune, settle, type BenchShape, type TileConfig } from '../compiled/index.js';
import { GpuRuntimeError, GpuTrainingState, STEPS_IN_FLIGHT, StepProgram, fmtBytes, type ProgramOptions } from './program.js';

/** Dawn toggles of the compiled step's device: its kernels never rely on bounds clamping or zeroed workgroup memory; profiles want unquantized timestamps. */
export const COMPUTE_DAWN_FLAGS = ['enable-dawn-features=allow_unsafe_apis,disable_robustness,disable_workgroup_init', 'disable-dawn-features=timestamp_quantization'];

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
}

let computeDevice: Promise<ComputeDevice> | undefined;

/** The compute device the compiled steps run on (one per process), with the adapter's limits. */
export function getComputeDevice(): Promise<ComputeDevice> {
  computeDevice ??= (async () => {
    const gpu = await createDawnGpu(COMPUTE_DAWN_FLAGS);
    const adapter = (await gpu.requestAdapter({ powerPreference: 'high-performance' })) as GPUAdapter | null;
    if (!adapter) throw new GpuRuntimeError('the compiled step found no WebGPU adapter');
    const l = adapter.limits;
    const features = (['timestamp-query', 'shader-f16'] as GPUFeatureName[]).filter((f) => adapter.features.has(f));
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
    };
    void device.lost.then((info) => {
      cd.failure ??= `the GPU device was lost (${info.reason}${info.message ? `: ${info.message}` : ''})`;
      computeDevice = undefined;
    });
    device.onuncapturederror = (e) => {
      cd.failure ??= `the GPU reported an error: ${(e as GPUUncapturedErrorEvent).error.message}`;
    };
    return cd;
  })();
  const p = computeDevice;
  p.catch(() => {
    if (computeDevice === p) computeDevice = undefined;
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
  ) {
    const s = schedule;
    this.description =
      `${program.dispatchesPerStep} dispatches per step (${s.body.length} fused calls per micro-batch from ${s.fusedOps.reduce((a, f) => a + f.length, 0)} graph ops), ` +
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
    return { loss, grads: await this.state.read('grad') };
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

export interface CompileOptions extends Pick<ProgramOptions, 'poison'> {
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
  const cd = await getComputeDevice();
  checkFailure(cd);
  let state = states.get(model);
  if (!state) {
    state = new GpuTrainingState(cd.device, schedule.flat, schedule.flatSize);
    states.set(model, state);
  }
  if (sp) state.setMasks(new Map([...sp.masks].map(([n, m]) => [n, { mask: m.mask, ...(m.block ? { blockMask: m.block.mask } : {}) }])));
  const auto = opts.autotune ?? 'auto';
  const tune = auto === 'auto' ? !cd.fallback : auto;
  if (tune) await tuneSchedule(cd.device, schedule);
  const program = await StepProgram.create(cd.device, schedule, state, {
    optim: config.optim,
    ...(opts.poison ? { poison: true } : {}),
    tileFor: (c) => (tune ? tuned.get(shapeKey(c)) : undefined),
  });
  return new WebGpuCompiledStep(cd, program, state, model, optimizer, schedule);
}

/** Waits for the compute device's queue to drain (tests, benchmarks). */
export async function computeIdle(): Promise<void> {
  const cd = await getComputeDevice();
  await settle(cd.device.queue.onSubmittedWorkDone());
}

export const webgpuStepCompiler: StepCompiler = { compile: (req) => compileWebGpuStep(req) };

export { WebGpuCompiledStep };

registerStepCompiler('webgpu', webgpuStepCompiler);
