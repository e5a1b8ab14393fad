/// <reference types="@webgpu/types" />
/**
 * A tiny runner for KernelSpecs: one compute pipeline per kernel key (explicit bind group layouts
 * built from the spec's bindings), bind groups created once per (kernel, resources), and encoding
 * into a caller's compute pass. Plus helpers to create, upload and read buffers (tests, benchmarks).
 *
 * Poison mode (tests): before each kernel, every binding marked `overwrite` is filled with NaN by a
 * fill kernel encoded in the same pass, so an output element the kernel fails to write reads back NaN.
 */
import { makeKernel, grid, type KernelSpec } from './kernel.js';

/** A buffer range bound to one binding (offset and size in bytes; size defaults to the rest). */
export type BufferRange = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };

const rangeOf = (r: BufferRange): { buffer: GPUBuffer; offset?: number; size?: number } => ('buffer' in r ? r : { buffer: r });

/** The quiet NaN bit pattern used as poison (reads back as NaN as f32, as a huge value as i32/u32). */
export const POISON_BITS = 0x7fc00000;

/** Fills `words` 32-bit words from the start of `out` with `POISON_BITS`. */
function poisonKernel(words: number): KernelSpec {
  const g = grid(Math.ceil(words / 256));
  return makeKernel({
    label: `poison ${words}`,
    bindings: [{ name: 'out', access: 'read_write', overwrite: true }],
    types: { out: 'array<u32>' },
    workgroups: g.workgroups,
    body: `@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lid : u32) {
  let i = ${g.flat} * 256u + lid;
  if (i < ${words}u) { out[i] = ${POISON_BITS}u; }
}`,
  });
}

export interface RunnerOptions {
  /** Fill `overwrite` outputs with NaN before each kernel (tests). */
  poison?: boolean;
}

export class KernelRunner {
  readonly poison: boolean;
  private readonly pipelines = new Map<string, { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout }>();
  private readonly bound = new WeakMap<GPUBindGroup, { spec: KernelSpec; poison: { spec: KernelSpec; group: GPUBindGroup }[] }>();

  constructor(
    readonly device: GPUDevice,
    opts: RunnerOptions = {},
  ) {
    this.poison = !!opts.poison;
  }

  /**
   * The compute pipeline of `spec` (compiled once per key), with WGSL compiler errors and validation
   * errors thrown as one Error. (createComputePipelineAsync is avoided: under Dawn in Node nothing
   * keeps the event loop alive while it is pending.)
   */
  async pipelineAsync(spec: KernelSpec): Promise<GPUComputePipeline> {
    const hit = this.pipelines.get(spec.key);
    if (hit) return hit.pipeline;
    // PATCHFLOW_GPU_LOG=1 (Node) traces each compile, so a driver that stalls on one shows which
    const trace = globalThis.process?.env?.PATCHFLOW_GPU_LOG === '1' ? performance.now() : undefined;
    if (trace !== undefined) process.stderr.write(`[gpu] compiling ${spec.label}\n`);
    this.device.pushErrorScope('validation');
    const module = this.device.createShaderModule({ code: spec.code, label: spec.label });
    const info = await settle(module.getCompilationInfo());
    const layout = this.layoutOf(spec);
    const pipeline = this.device.createComputePipeline({
      label: spec.label,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: spec.entryPoint },
    });
    const err = await settle(this.device.popErrorScope());
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length || err) {
      const lines = errors.map((m) => `  ${m.lineNum}:${m.linePos} ${m.message}`).join('\n');
      throw new Error(`kernel '${spec.label}' failed to compile:\n${lines}${err ? `\n  ${err.message}` : ''}`);
    }
    this.pipelines.set(spec.key, { pipeline, layout });
    if (trace !== undefined) process.stderr.write(`[gpu] compiled ${spec.label} in ${(performance.now() - trace).toFixed(0)} ms\n`);
    return pipeline;
  }

  /** Synchronous pipeline creation (validation errors surface through the device's error scopes). */
  pipeline(spec: KernelSpec): GPUComputePipeline {
    const hit = this.pipelines.get(spec.key);
    if (hit) return hit.pipeline;
    const layout = this.layoutOf(spec);
    const pipeline = this.device.createComputePipeline({
      label: spec.label,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module: this.device.createShaderModule({ code: spec.code, label: spec.label }), entryPoint: spec.entryPoint },
    });
    this.pipelines.set(spec.key, { pipeline, layout });
    return pipeline;
  }

  private layoutOf(spec: KernelSpec): GPUBindGroupLayout {
    const hit = this.pipelines.get(spec.key);
    if (hit) return hit.layout;
    return this.device.createBindGroupLayout({
      label: spec.label,
      entries: spec.bindings.map((b, i) => ({
        binding: i,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: b.access === 'uniform' ? 'uniform' : b.access === 'read' ? 'read-only-storage' : 'storage' },
      })),
    });
  }

  /**
   * The bind group of `spec` over `resources` (one range per binding, in the spec's order, or by
   * binding name). Create it once and reuse it every step.
   */
  bind(spec: KernelSpec, resources: BufferRange[] | Record<string, BufferRange>): GPUBindGroup {
    const list = Array.isArray(resources)
      ? resources
      : spec.bindings.map((b) => {
          const r = resources[b.name];
          if (!r) throw new Error(`bind '${spec.label}': no resource for binding '${b.name}'`);
          return r;
        });
    if (list.length !== spec.bindings.length) {
      throw new Error(`bind '${spec.label}': ${list.length} resources for ${spec.bindings.length} bindings (${spec.bindings.map((b) => b.name).join(', ')})`);
    }
    this.pipeline(spec);
    const layout = this.pipelines.get(spec.key)!.layout;
    const entries = list.map((r, i) => {
      const { buffer, offset = 0, size } = rangeOf(r);
      return { binding: i, resource: { buffer, offset, ...(size !== undefined ? { size } : {}) } };
    });
    const group = this.device.createBindGroup({ label: spec.label, layout, entries });
    const poison: { spec: KernelSpec; group: GPUBindGroup }[] = [];
    if (this.poison) {
      spec.bindings.forEach((b, i) => {
        if (!b.overwrite) return;
        const { buffer, offset = 0, size } = rangeOf(list[i]!);
        const bytes = size ?? buffer.size - offset;
        const p = poisonKernel(Math.floor(bytes / 4));
        this.pipeline(p);
        poison.push({ spec: p, group: this.device.createBindGroup({ layout: this.pipelines.get(p.key)!.layout, entries: [{ binding: 0, resource: { buffer, offset, size: bytes } }] }) });
      });
    }
    this.bound.set(group, { spec, poison });
    return group;
  }

  /** Records `spec` with `group` into `pass` (preceded by the poison fills in poison mode). */
  encode(pass: GPUComputePassEncoder, spec: KernelSpec, group: GPUBindGroup): void {
    if (this.poison) {
      for (const p of this.bound.get(group)?.poison ?? []) this.dispatch(pass, p.spec, p.group);
    }
    this.dispatch(pass, spec, group);
  }

  private dispatch(pass: GPUComputePassEncoder, spec: KernelSpec, group: GPUBindGroup): void {
    pass.setPipeline(this.pipeline(spec));
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(...spec.workgroups);
  }

  /**
   * Convenience for tests: compiles (reporting WGSL errors), binds, runs each (spec, resources) in
   * order in one compute pass, submits, and waits for completion. Throws on validation errors.
   */
  async run(...steps: [KernelSpec, BufferRange[] | Record<string, BufferRange>][]): Promise<void> {
    for (const [spec] of steps) await this.pipelineAsync(spec);
    this.device.pushErrorScope('validation');
    const groups = steps.map(([spec, res]) => this.bind(spec, res));
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    steps.forEach(([spec], i) => this.encode(pass, spec, groups[i]!));
    pass.end();
    this.device.queue.submit([enc.finish()]);
    const err = await settle(this.device.popErrorScope());
    if (err) throw new Error(`run ${steps.map(([s]) => s.label).join(', ')}: ${err.message}`);
    await settle(this.device.queue.onSubmittedWorkDone());
  }
}

/**
 * Awaits a WebGPU promise while keeping Node's event loop alive: Dawn's promises (onSubmittedWorkDone,
 * mapAsync, popErrorScope) hold no handle of their own, so a script awaiting only them would exit.
 */
export async function settle<T>(p: Promise<T>): Promise<T> {
  const timer = setInterval(() => {}, 1000);
  try {
    return await p;
  } finally {
    clearInterval(timer);
  }
}

const STORAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** A storage buffer of `bytes` (rounded up to 16), zero-filled. */
export function createBuffer(device: GPUDevice, bytes: number, usage = STORAGE()): GPUBuffer {
  return device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage });
}

/** A storage buffer holding `data` (f32 or i32/u32 words; f16 data as Uint16Array). */
export function upload(device: GPUDevice, data: Float32Array | Int32Array | Uint32Array | Uint16Array, usage = STORAGE()): GPUBuffer {
  const buf = createBuffer(device, data.byteLength, usage);
  device.queue.writeBuffer(buf, 0, data.buffer, data.byteOffset, data.byteLength);
  return buf;
}

/** A uniform buffer holding `data` (rounded up to 16 bytes). */
export function uploadUniform(device: GPUDevice, data: Float32Array | Uint32Array | Int32Array): GPUBuffer {
  return upload(device, data, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
}

async function readBytes(device: GPUDevice, buffer: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
  const size = Math.ceil(bytes / 4) * 4;
  const staging = device.createBuffer({ size: Math.max(4, size), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(buffer, offset, staging, 0, size);
  device.queue.submit([enc.finish()]);
  await settle(staging.mapAsync(GPUMapMode.READ));
  const out = staging.getMappedRange().slice(0, bytes);
  staging.unmap();
  staging.destroy();
  return out;
}

/** Reads `count` f32 values from byte `offset` of `buffer`. */
export async function readF32(device: GPUDevice, buffer: GPUBuffer, count: number, offset = 0): Promise<Float32Array> {
  return new Float32Array(await readBytes(device, buffer, offset, count * 4));
}

/** Reads `count` i32 values from byte `offset` of `buffer`. */
export async function readI32(device: GPUDevice, buffer: GPUBuffer, count: number, offset = 0): Promise<Int32Array> {
  return new Int32Array(await readBytes(device, buffer, offset, count * 4));
}

/** IEEE binary16 bits of `x` (round to nearest even), for f16 test inputs. */
export function toF16Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

/** The value of IEEE binary16 bits `h`. */
export function fromF16Bits(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
