import { BackendError, FUSED_OPS, tf, type Availability, type BackendCapabilities, type BackendPlugin, type KernelSpec } from '@patchflow/tensor';
import { explainSyncReads, fixIntTransposes, type WebGpuModuleLike } from './fixes.js';
import { defaultGpu, GpuLoadError, isNode, withTimeout, type GpuAdapterInfoLike, type GpuAdapterLike, type GpuLike } from './gpu.js';
import { explainDawnLog, probeDawn, type DawnAdapterFacts } from './probe.js';
import { webgpuKernels } from './kernels.js';
import { F16_PROBE_FLAGS, f16Support } from './step/precision.js';

/** Whether `--precision f16` can run on the adapter (with the f16 Dawn toggles), and on tensor cores. */
export interface GpuF16Info {
  /** shader-f16: f16 mixed-precision training can run (compiled step). */
  available: boolean;
  /** Subgroup matrices (chromium-experimental-subgroup-matrix, f16×f16→f32 16×16×16): its matmuls use tensor cores. */
  subgroupMatrix: boolean;
  /** The adapter's subgroup-matrix configs. */
  configs: string[];
  /** Why not (either), empty when both are there. */
  reason: string;
}

/**
 * Highest rank that works: tfjs-backend-webgpu 4.22 generates WGSL with a `vec5` type (which does
 * not exist) for rank-5 pads, so rank-5 programs fail to compile.
 */
export const WEBGPU_MAX_RANK = 4;

export interface WebGpuBackendOptions {
  /** The backend name (config key `backend`). Default 'webgpu'. */
  name?: string;
  /**
   * Supplies the WebGPU implementation, or undefined when there is none. Default: `navigator.gpu`
   * if present, else Dawn (npm `webgpu`) in Node. Tests inject fakes here.
   */
  gpu?: () => Promise<GpuLike | undefined>;
  /** Give up on `requestAdapter` after this long (a broken driver can hang it). Default 15000. */
  adapterTimeoutMs?: number;
  /** Adapter preference; tfjs's webgpu backend asks for 'high-performance' too. */
  powerPreference?: 'low-power' | 'high-performance';
}

/** What `gpuInfo()` reports about the adapter WebGPU would use. */
export type GpuInfo =
  | {
      available: true;
      /** 'dawn' (npm webgpu or a navigator.gpu set up in Node), 'navigator.gpu' (browser), or 'injected' (options.gpu). */
      implementation: string;
      vendor: string;
      architecture: string;
      device: string;
      description: string;
      /** True for software adapters such as lavapipe/llvmpipe or SwiftShader: fine for tests, slow. */
      isFallbackAdapter: boolean;
      features: string[];
      /** The limits that bound tensor sizes and kernels (bytes / counts). */
      limits: Record<string, number>;
      /** f16 mixed precision (`--precision f16`): asked of the adapter with the f16 Dawn toggles. */
      f16: GpuF16Info;
    }
  | { available: false; reason: string };

export interface WebGpuBackendPlugin extends BackendPlugin {
  /** Adapter facts (vendor, architecture, limits, ...) for logs and for runs on real GPUs. Never throws. */
  gpuInfo(): Promise<GpuInfo>;
}

const LIMIT_NAMES = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
] as const;

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function noAdapterReason(): string {
  if (!isNode) {
    return (
      'no WebGPU adapter found: the browser exposes navigator.gpu but returned no adapter (WebGPU may be ' +
      'disabled or this GPU blocklisted; see chrome://gpu, or try another browser)'
    );
  }
  return explainDawnLog([]);
}

async function readInfo(adapter: GpuAdapterLike): Promise<GpuAdapterInfoLike> {
  try {
    if (adapter.info) return adapter.info;
    if (adapter.requestAdapterInfo) return await adapter.requestAdapterInfo();
  } catch {
    // info is optional
  }
  return {};
}

/** Builds a WebGPU backend plugin; the package's default `webgpuBackend` is `createWebGpuBackend()`. */
export function createWebGpuBackend(options: WebGpuBackendOptions = {}): WebGpuBackendPlugin {
  const name = options.name ?? 'webgpu';
  const tfjsName = 'webgpu';
  const timeoutMs = options.adapterTimeoutMs ?? 15000;
  const powerPreference = options.powerPreference ?? 'high-performance';
  const getGpu = options.gpu ?? (() => defaultGpu());
  let lastInfo: GpuAdapterInfoLike | undefined;
  let lastF16: GpuF16Info | undefined;

  /** f16 support, from a probe with the f16 toggles (Dawn in Node) or the adapter's own features. */
  async function f16Facts(plain: DawnAdapterFacts, probed: boolean): Promise<GpuF16Info> {
    let facts = plain;
    if (probed) {
      const p = await probeDawn(F16_PROBE_FLAGS, { timeoutMs, powerPreference });
      if (!p.ok) return { available: false, subgroupMatrix: false, configs: [], reason: `the adapter could not be probed with the f16 toggles: ${p.reason}` };
      facts = p;
    }
    const s = f16Support(facts.features, facts.info);
    lastF16 = { available: s.shaderF16, subgroupMatrix: s.subgroupMatrix, configs: s.configs, reason: s.reason };
    return lastF16;
  }

  /** The implementation (Dawn in Node unless injected), or a reason; never throws. */
  async function obtainGpu(): Promise<{ gpu: GpuLike } | { reason: string }> {
    let gpu: GpuLike | undefined;
    try {
      gpu = await getGpu();
    } catch (e) {
      return { reason: e instanceof GpuLoadError ? e.message : `WebGPU could not be initialised: ${errorMessage(e)}` };
    }
    if (!gpu) {
      return {
        reason: isNode
          ? 'no WebGPU implementation: navigator.gpu is missing and Dawn (the webgpu npm package) was not provided'
          : 'this browser does not support WebGPU (navigator.gpu is missing): use a recent Chrome or Edge, or a ' +
            'browser with WebGPU enabled, on a secure (https or localhost) page',
      };
    }
    return { gpu };
  }

  /** Requests the adapter with a timeout; never throws. */
  async function obtainAdapter(): Promise<{ adapter: GpuAdapterLike } | { reason: string }> {
    const g = await obtainGpu();
    if ('reason' in g) return g;
    let adapter: GpuAdapterLike | null | 'timeout';
    try {
      adapter = await withTimeout<GpuAdapterLike | null | 'timeout'>(
        g.gpu.requestAdapter({ powerPreference }),
        timeoutMs,
        () => 'timeout',
      );
    } catch (e) {
      return { reason: `requesting a WebGPU adapter failed: ${errorMessage(e)}` };
    }
    if (adapter === 'timeout') {
      return {
        reason:
          `requesting a WebGPU adapter did not finish within ${timeoutMs / 1000}s: the GPU driver seems stuck; ` +
          'check it (vulkaninfo --summary on Linux) or reinstall it',
      };
    }
    if (!adapter) return { reason: noAdapterReason() };
    lastInfo = await readInfo(adapter);
    return { adapter };
  }

  /**
   * The adapter's facts, or why there is none. In Node with Dawn (nothing injected, no navigator.gpu
   * set up yet) this asks a child process, so Dawn's native logging never reaches the terminal;
   * elsewhere it asks the WebGPU implementation in this process.
   */
  async function adapterFacts(): Promise<{ facts: DawnAdapterFacts } | { reason: string }> {
    if (probesDawn()) {
      const p = await probeDawn([], { timeoutMs, powerPreference });
      if (!p.ok) return { reason: p.reason };
      lastInfo = p.info;
      return { facts: p };
    }
    const a = await obtainAdapter();
    if ('reason' in a) return a;
    const limits: Record<string, number> = {};
    const src = (a.adapter.limits ?? {}) as Record<string, unknown>;
    for (const k of LIMIT_NAMES) if (typeof src[k] === 'number') limits[k] = src[k] as number;
    const info = lastInfo ?? {};
    return {
      facts: {
        info: { ...info, isFallbackAdapter: !!(info.isFallbackAdapter ?? a.adapter.isFallbackAdapter) },
        features: a.adapter.features ? [...a.adapter.features].sort() : [],
        limits,
      },
    };
  }

  /** True where adapterFacts asks a Dawn child process (Node, nothing injected, no navigator.gpu). */
  function probesDawn(): boolean {
    const navigatorGpu = (globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu;
    return !options.gpu && isNode && !navigatorGpu;
  }

  async function checkAvailability(): Promise<Availability> {
    try {
      const a = await adapterFacts();
      if ('reason' in a) return { ok: false, reason: a.reason };
      await f16Facts(a.facts, probesDawn());
      return { ok: true };
    } catch (e) {
      // adapterFacts is written not to throw; this is the belt to its braces.
      return { ok: false, reason: `WebGPU availability check failed: ${errorMessage(e)}` };
    }
  }

  async function gpuInfo(): Promise<GpuInfo> {
    const a = await adapterFacts();
    if ('reason' in a) return { available: false, reason: a.reason };
    const { info, features, limits } = a.facts;
    const f16 = await f16Facts(a.facts, probesDawn());
    const picked: Record<string, number> = {};
    for (const k of LIMIT_NAMES) if (typeof limits[k] === 'number') picked[k] = limits[k];
    return {
      available: true,
      implementation: options.gpu ? 'injected' : isNode ? 'dawn' : 'navigator.gpu',
      vendor: info.vendor ?? '',
      architecture: info.architecture ?? '',
      device: info.device ?? '',
      description: info.description ?? '',
      isFallbackAdapter: !!info.isFallbackAdapter,
      features,
      limits: picked,
      f16,
    };
  }

  async function setup(): Promise<void> {
    const g = await obtainGpu();
    if ('reason' in g) throw new BackendError(`backend "${name}" cannot be set up: ${g.reason}`);
    // Dynamic, so that importing this package stays cheap. In Node this resolves to the package's
    // CommonJS bundle, which require()s '@tensorflow/tfjs-core': the same instance @patchflow/tensor
    // uses (one hoisted copy; tests check). It registers the 'webgpu' backend only if navigator.gpu
    // exists at its first import, which is why the globals are installed above, first.
    const imported = (await import('@tensorflow/tfjs-backend-webgpu')) as WebGpuModuleLike & { default?: WebGpuModuleLike };
    // Node's ESM view of the CommonJS bundle may put the exports on `default` only.
    const mod: WebGpuModuleLike = imported.WebGPUBackend ? imported : (imported.default ?? imported);
    if (!tf.findBackendFactory(tfjsName)) {
      // Someone imported tfjs-backend-webgpu before navigator.gpu existed: its kernels are registered,
      // the backend factory is not. Register one the way its base.ts does.
      const WebGPUBackend = mod.WebGPUBackend as unknown as (new (device: unknown, info?: unknown) => tf.KernelBackend) | undefined;
      if (!WebGPUBackend) throw new BackendError(`backend "${name}": @tensorflow/tfjs-backend-webgpu exports no WebGPUBackend`);
      tf.registerBackend(
        tfjsName,
        async () => {
          const adapter = (await g.gpu.requestAdapter({ powerPreference })) as
            | (GpuAdapterLike & { limits: Record<string, number>; features: Set<string>; requestDevice(d: object): Promise<unknown> })
            | null;
          if (!adapter) throw new BackendError(noAdapterReason());
          const requiredFeatures = ['timestamp-query'].filter((f) => adapter.features.has(f));
          const l = adapter.limits;
          const device = await adapter.requestDevice({
            requiredFeatures,
            requiredLimits: {
              maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
              maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
              maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
              maxBufferSize: l.maxBufferSize,
              maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
              maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
            },
          });
          return new WebGPUBackend(device, await readInfo(adapter));
        },
        3,
      );
    }
    explainSyncReads(mod);
    fixIntTransposes(mod);
  }

  function capabilities(): BackendCapabilities {
    const notes: string[] = [];
    if (lastInfo) {
      const parts = [lastInfo.vendor, lastInfo.architecture, lastInfo.device].filter((s) => !!s);
      if (parts.length) notes.push(`adapter: ${parts.join(' / ')}`);
      if (lastInfo.description) notes.push(`description: ${lastInfo.description}`);
      if (lastInfo.isFallbackAdapter) notes.push('software (fallback) adapter: right for correctness, not for speed');
    } else {
      notes.push('adapter not queried yet');
    }
    if (lastF16) {
      notes.push(
        lastF16.available
          ? lastF16.subgroupMatrix
            ? '--precision f16: yes, on tensor cores (shader-f16, chromium-experimental-subgroup-matrix)'
            : `--precision f16: yes (shader-f16), without tensor cores: ${lastF16.reason}`
          : `--precision f16: no: ${lastF16.reason}`,
      );
    }
    if (isNode) notes.push('no synchronous reads in Node (dataSync/arraySync): use await tensor.data()');
    notes.push(`max rank ${WEBGPU_MAX_RANK}: tfjs-backend-webgpu 4.22 emits invalid WGSL (vec5) for rank-5 pads`);
    return { device: 'gpu', maxRank: WEBGPU_MAX_RANK, fusedOps: fusedOps(), notes };
  }

  function kernels(): KernelSpec[] {
    return webgpuKernels();
  }

  /** The patchflow fused ops whose forward and gradient kernels this plugin registers. */
  function fusedOps(): string[] {
    const names = new Set(kernels().map((k) => k.kernelName));
    return FUSED_OPS.filter((op) => names.has(op) && names.has(`${op}Grad`));
  }

  return {
    name,
    description: 'WebGPU via @tensorflow/tfjs-backend-webgpu: navigator.gpu in browsers, Dawn (npm webgpu) in Node',
    tfjsName,
    checkAvailability,
    setup,
    capabilities,
    gpuInfo,
    kernels,
  };
}
