/**
 * Loads the native kernel addon (build/patchflow_cpu.node, compiled by scripts/build-native.mjs).
 * Never throws: when the addon is missing or fails to load, `nativeInfo()` says why and the cpu
 * backend runs on stock tfjs kernels.
 */
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

type F32 = Float32Array;
type I32 = Int32Array;

/** The addon's functions; every one writes into preallocated output arrays (see native/kernels.cc). */
export interface NativeAddon {
  matmul(a: F32, b: F32, c: F32, batch: number, batchA: number, batchB: number, m: number, n: number, k: number,
    transA: number, transB: number, bias: F32 | null, act: number, alpha: number): void;
  gelu(x: F32, y: F32, n: number): void;
  geluGrad(x: F32, dy: F32, dx: F32, n: number): void;
  layerNorm(x: F32, gamma: F32, beta: F32, rows: number, c: number, eps: number, y: F32, mean: F32, rstd: F32): void;
  layerNormGrad(dy: F32, x: F32, gamma: F32, mean: F32, rstd: F32, rows: number, c: number, dx: F32, dgamma: F32, dbeta: F32): void;
  softmax(x: F32, y: F32, rows: number, c: number): void;
  crossEntropy(logits: F32, labels: I32, n: number, v: number, k: number, loss: F32, lse: F32): void;
  crossEntropyGrad(logits: F32, labels: I32, lse: F32, dy: F32, n: number, v: number, k: number, dlogits: F32): void;
  attention(q: F32, k: F32, v: F32, bh: number, t: number, d: number, scale: number, out: F32, lse: F32): void;
  attentionGrad(q: F32, k: F32, v: F32, out: F32, lse: F32, dy: F32, bh: number, t: number, d: number, scale: number,
    dq: F32, dk: F32, dv: F32): void;
  segmentSum(x: F32, ids: I32, s: number, inner: number, numSegments: number, out: F32): void;
  transpose(x: F32 | I32, out: F32 | I32, shape: number[], perm: number[]): void;
  sum(x: F32, outer: number, red: number, inner: number, out: F32): void;
  adamw(w: F32, g: F32, m: F32, v: F32, n: number, scale: number, beta1: number, beta2: number, eps: number, decay: number,
    stepSize: number, bc2: number, wOut: F32, mOut: F32, vOut: F32): void;
  binary(op: number, rev: number, big: F32, n: number, small: F32, ns: number, out: F32): void;
  copyRows(src: F32 | I32, srcOff: number, srcStride: number, dst: F32 | I32, dstOff: number, dstStride: number, rows: number, cols: number): void;
  /** y[M,N] = x[M,K] @ (w ⊙ mask expanded to b×b blocks); mask [K/b, N/b], non-zero = kept; only kept blocks of w are read. */
  blockSparseMatMul(x: F32, w: F32, blockMask: I32, y: F32, m: number, k: number, n: number, b: number, bias?: F32 | null): void;
  /**
   * dx = dy @ (w ⊙ mask)^T; dw = (x^T @ dy) ⊙ mask (exact zeros outside the kept blocks). parts: 1 = dx
   * only, 2 = dw only (the other output untouched), 3 = both (default).
   */
  blockSparseMatMulGrad(x: F32, w: F32, blockMask: I32, dy: F32, dx: F32, dw: F32, m: number, k: number, n: number, b: number, parts?: number): void;
  setThreads(n: number): void;
  info(): { threads: number; simd: string; openmp: boolean };
  /** Points file descriptor 2 at `path` (truncated); returns the saved descriptor (-1: unsupported). */
  stderrRedirect(path: string): number;
  stderrRestore(saved: number): void;
}

export interface NativeInfo {
  /** True when the addon is loaded and its kernels are registered on the `cpu` backend. */
  loaded: boolean;
  /** Why it is not loaded (absent when loaded). */
  reason?: string;
  /** Worker threads the native kernels use (PATCHFLOW_THREADS, default: all cores); 1 when not loaded. */
  threads: number;
  /** SIMD level the addon was compiled for: 'avx512' | 'avx2' | 'scalar' ('none' when not loaded). */
  simd: string;
  /** Path of the loaded addon. */
  path?: string;
}

let addon: NativeAddon | undefined;
let info: NativeInfo | undefined;

function candidates(): string[] {
  // dist/index.js -> ../build ; src/cpu/native.ts (tests on sources) -> ../../build
  return ['../build/patchflow_cpu.node', '../../build/patchflow_cpu.node'].map((p) => fileURLToPath(new URL(p, import.meta.url)));
}

function load(): void {
  if (info) return;
  const env = process.env.PATCHFLOW_NATIVE;
  if (env === '0' || env === 'off') {
    info = { loaded: false, reason: 'native kernels disabled by PATCHFLOW_NATIVE=' + env + '; using stock tfjs kernels', threads: 1, simd: 'none' };
    return;
  }
  const paths = env ? [env] : candidates().filter((p) => existsSync(p));
  if (!paths.length) {
    info = { loaded: false, reason: 'native kernels not built (no build/patchflow_cpu.node; run `npm run build` in packages/tensor with g++ installed); using stock tfjs kernels', threads: 1, simd: 'none' };
    return;
  }
  const require = createRequire(import.meta.url);
  try {
    const a = require(paths[0]!) as NativeAddon;
    const i = a.info();
    addon = a;
    info = { loaded: true, threads: i.threads, simd: i.simd, path: paths[0] };
  } catch (e) {
    info = { loaded: false, reason: `native kernels failed to load from ${paths[0]}: ${(e as Error).message.split('\n')[0]}; using stock tfjs kernels`, threads: 1, simd: 'none' };
  }
}

/** The addon, or undefined when it is not available. */
export function nativeAddon(): NativeAddon | undefined {
  load();
  return addon;
}

/** Whether native kernels are loaded, why not, their thread count and SIMD level. */
export function nativeInfo(): NativeInfo {
  load();
  return { ...info! };
}

/** Sets the native kernels' thread count (overrides PATCHFLOW_THREADS). */
export function setNativeThreads(n: number): void {
  load();
  if (!addon || !(n >= 1)) return;
  addon.setThreads(Math.floor(n));
  info = { ...info!, threads: addon.info().threads };
}

let capturing = false;

/**
 * Runs `fn` with this process's file descriptor 2 pointed at a temporary file, and returns what
 * native code (a GPU driver, Dawn, Mesa) printed there meanwhile, as lines. JavaScript writes to
 * process.stderr in that window land in the file too: callers re-emit lines that are not theirs.
 * Without the native addon (or on a platform without dup2) `fn` runs as is and `output` is empty.
 * Calls do not nest: an inner call runs `fn` uncaptured (its output goes to the outer file). When
 * `fn` throws, the error is rethrown with the captured lines as `nativeStderr`.
 */
export async function captureNativeStderr<T>(fn: () => T | Promise<T>): Promise<{ value: T; output: string[] }> {
  load();
  if (!addon || capturing || typeof addon.stderrRedirect !== 'function') return { value: await fn(), output: [] };
  const dir = mkdtempSync(join(tmpdir(), 'patchflow-stderr-'));
  const file = join(dir, 'stderr.txt');
  let saved = -1;
  try {
    saved = addon.stderrRedirect(file);
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return { value: await fn(), output: [] };
  }
  capturing = true;
  let output: string[] = [];
  try {
    const value = await fn();
    output = readLines(file);
    return { value, output };
  } catch (e) {
    output = readLines(file);
    throw Object.assign(e instanceof Error ? e : new Error(String(e)), { nativeStderr: output });
  } finally {
    capturing = false;
    addon.stderrRestore(saved);
    rmSync(dir, { recursive: true, force: true });
  }
}

function readLines(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
  } catch {
    return [];
  }
}
