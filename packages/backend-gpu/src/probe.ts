/**
 * Asking Dawn (the `webgpu` npm package) for an adapter without letting its native logging reach
 * the user's terminal.
 *
 * Dawn and the Vulkan stack print straight to file descriptor 2 from C++ (e.g. "Warning: Couldn't
 * load Vulkan: libvulkan.so.1: cannot open shared object file" followed by a source location that
 * looks like a stack frame, or Mesa's warnings); JavaScript cannot intercept that. So availability
 * is probed in a child Node process whose stderr is piped here: its adapter facts come back as one
 * JSON line on stdout, and what Dawn printed is turned into a one-line reason a user can act on
 * (`explainDawnLog`). Only a run that really uses the GPU loads Dawn into this process, and then
 * with fd 2 captured around the calls that print (`quietGpu`, through @patchflow/tensor's
 * `captureNativeStderr`); `PATCHFLOW_GPU_LOG=1` prints what was captured.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { captureNativeStderr } from '@patchflow/tensor';
import type { GpuAdapterInfoLike, GpuLike } from './gpu.js';

export interface DawnAdapterFacts {
  info: GpuAdapterInfoLike & { subgroupMaxSize?: number; subgroupMatrixConfigs?: { componentType: string; resultComponentType: string; M: number; N: number; K: number }[] };
  features: string[];
  limits: Record<string, number>;
}

export type DawnProbe = ({ ok: true } & DawnAdapterFacts & { log: string[] }) | { ok: false; reason: string; log: string[] };

const MARK = '@@patchflow-dawn-probe@@';

/** The child's program: load Dawn, ask for an adapter, print its facts as one marked JSON line. */
function probeScript(webgpuUrl: string, flags: string[], powerPreference: string): string {
  return `
const { create, globals } = await import(${JSON.stringify(webgpuUrl)});
Object.assign(globalThis, globals);
const gpu = create(${JSON.stringify(flags)});
const a = await gpu.requestAdapter({ powerPreference: ${JSON.stringify(powerPreference)} });
let out = null;
if (a) {
  const i = a.info ?? {};
  const limits = {};
  for (const k in a.limits) if (typeof a.limits[k] === 'number') limits[k] = a.limits[k];
  out = {
    info: { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description,
            isFallbackAdapter: !!(i.isFallbackAdapter ?? a.isFallbackAdapter), subgroupMaxSize: i.subgroupMaxSize,
            subgroupMatrixConfigs: [...(i.subgroupMatrixConfigs ?? [])].map((c) => ({ componentType: c.componentType, resultComponentType: c.resultComponentType, M: c.M, N: c.N, K: c.K })) },
    features: [...a.features].sort(),
    limits,
  };
}
process.stdout.write(${JSON.stringify(MARK)} + JSON.stringify(out) + '\\n');
process.exit(0);
`;
}

/** Where `webgpu` resolves from this package, as a file URL; undefined when it is not installed. */
function webgpuUrl(): string | undefined {
  try {
    return pathToFileURL(createRequire(import.meta.url).resolve('webgpu')).href;
  } catch {
    return undefined;
  }
}

const VULKAN_DRIVER_HINT =
  "install a Vulkan driver: your GPU vendor's, or Mesa's lavapipe for a CPU fallback (Debian bookworm: " +
  'apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1; this is what .ci/run does)';

/** The line a user should read, for what Dawn printed while finding no adapter. */
export function explainDawnLog(log: string[], platform: string = process.platform): string {
  const text = log.join('\n');
  let m = /Couldn't load Vulkan: ([^:\n]*libvulkan[^:\n]*): cannot open shared object file/.exec(text);
  if (m) return `no Vulkan loader (${m[1]!.trim().replace(/^.*\//, '')} not found); ${VULKAN_DRIVER_HINT}`;
  m = /Couldn't load Vulkan: ([^\n]*)/.exec(text);
  if (m) return `the Vulkan loader could not be loaded (${m[1]!.trim()}); reinstall libvulkan1 or ${VULKAN_DRIVER_HINT}`;
  if (/Found no drivers|VK_ERROR_INCOMPATIBLE_DRIVER/.test(text)) {
    const icd = /Failed to open JSON file ([^\n]*)/.exec(text);
    return (
      `no Vulkan driver: the Vulkan loader found no driver (ICD)${icd ? ` (it could not open ${icd[1]!.trim()}; check VK_DRIVER_FILES / VK_ICD_FILENAMES)` : ''}; ` +
      VULKAN_DRIVER_HINT
    );
  }
  switch (platform) {
    case 'linux':
      return `no WebGPU adapter found: ${VULKAN_DRIVER_HINT}`;
    case 'win32':
      return 'no WebGPU adapter found: install or update your GPU driver (Dawn uses Direct3D 12 or Vulkan)';
    case 'darwin':
      return 'no WebGPU adapter found: Dawn needs Metal (macOS 11 or later on a Metal-capable Mac)';
    default:
      return `no WebGPU adapter found: Dawn has no backend for platform ${platform}`;
  }
}

/** Drops the source-location lines Dawn appends to each warning ("    at operator() (...cpp:368)"). */
export function meaningfulLines(log: string[]): string[] {
  return log.filter((l) => !/^\s+at /.test(l)).map((l) => l.trim());
}

const probes = new Map<string, Promise<DawnProbe>>();

/**
 * Asks Dawn for an adapter in a child process (stderr captured). Never throws; gives up after
 * `timeoutMs` (a broken driver can hang). Successful probes are cached per flag set; failures are
 * not (installing a driver fixes them without a restart).
 */
export function probeDawn(flags: string[] = [], opts: { timeoutMs?: number; powerPreference?: string } = {}): Promise<DawnProbe> {
  const key = JSON.stringify([flags, opts.powerPreference ?? 'high-performance']);
  const cached = probes.get(key);
  if (cached) return cached;
  const p = runProbe(flags, opts.timeoutMs ?? 15000, opts.powerPreference ?? 'high-performance');
  probes.set(key, p);
  void p.then((r) => {
    if (!r.ok && probes.get(key) === p) probes.delete(key);
  });
  return p;
}

function runProbe(flags: string[], timeoutMs: number, powerPreference: string): Promise<DawnProbe> {
  const url = webgpuUrl();
  if (!url) {
    return Promise.resolve({
      ok: false,
      reason: "the 'webgpu' npm package (Dawn) is not installed next to @patchflow/backend-gpu; reinstall dependencies (npm install)",
      log: [],
    });
  }
  return new Promise<DawnProbe>((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', probeScript(url, flags, powerPreference)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, MESA_VK_IGNORE_CONFORMANCE_WARNING: '1' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    timer.unref();
    const finish = (code: number | null, signal: NodeJS.Signals | null, spawnError?: Error) => {
      clearTimeout(timer);
      const log = stderr.split('\n').filter((l) => l.trim() !== '');
      if (spawnError) return resolve({ ok: false, reason: `could not start a process to probe WebGPU: ${spawnError.message}`, log });
      if (timedOut) {
        return resolve({
          ok: false,
          reason:
            `requesting a WebGPU adapter did not finish within ${timeoutMs / 1000}s: the GPU driver seems stuck; ` +
            'check it (vulkaninfo --summary on Linux) or reinstall it',
          log,
        });
      }
      const line = stdout.split('\n').find((l) => l.startsWith(MARK));
      if (!line) {
        const first = meaningfulLines(log).find((l) => !/^(file:|node:|\s*\^)/.test(l)) ?? 'no output';
        const how = signal ? `signal ${signal}` : `exit code ${code}`;
        return resolve({ ok: false, reason: `Dawn (the webgpu npm package) failed while looking for an adapter (${how}): ${first}`, log });
      }
      const facts = JSON.parse(line.slice(MARK.length)) as DawnAdapterFacts | null;
      resolve(facts ? { ok: true, ...facts, log } : { ok: false, reason: explainDawnLog(log), log });
    };
    child.on('error', (e) => finish(null, null, e));
    child.on('close', (code, signal) => finish(code, signal));
  });
}

/** What native code printed while this process used Dawn (see `quietGpu`). */
export const dawnLog: string[] = [];

function record(lines: string[]): void {
  if (!lines.length) return;
  dawnLog.push(...lines);
  if (process.env.PATCHFLOW_GPU_LOG === '1') for (const l of lines) process.stderr.write(`[dawn] ${l}\n`);
}

/** Runs `fn` with native stderr captured into `dawnLog` (shown with PATCHFLOW_GPU_LOG=1). */
export async function quiet<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    const { value, output } = await captureNativeStderr(fn);
    record(output);
    return value;
  } catch (e) {
    record((e as { nativeStderr?: string[] }).nativeStderr ?? []);
    throw e;
  }
}

/** Binds methods to the target, so that Dawn's native objects see themselves as `this`. */
function wrap<T extends object>(target: T, overrides: Record<string, unknown>): T {
  return new Proxy(target, {
    get(t, k) {
      if (typeof k === 'string' && k in overrides) return overrides[k];
      const v = Reflect.get(t, k, t) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
  });
}

/**
 * `gpu` with requestAdapter (and the adapter's requestDevice) run under `quiet`: those are the calls
 * where Dawn and the Vulkan driver print (adapter discovery, limits, device creation).
 */
export function quietGpu(gpu: GpuLike): GpuLike {
  return wrap(gpu, {
    requestAdapter: async (o?: object) => {
      const a = (await quiet(() => gpu.requestAdapter(o as never))) as (object & { requestDevice?: (d?: object) => Promise<unknown> }) | null;
      if (!a || typeof a.requestDevice !== 'function') return a;
      return wrap(a, { requestDevice: (d?: object) => quiet(() => a.requestDevice!(d)) });
    },
  });
}
