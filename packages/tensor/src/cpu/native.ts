/**
 * Loads the native kernel addon (patchflow_cpu.node, built by scripts/build-native.mjs from native/).
 *
 * Which binary: PATCHFLOW_NATIVE=/path/to/addon.node when set; else the prebuilt binary that ships in
 * the package for this platform (prebuilds/<platform>-<arch>/, glibc Linux x64 and arm64), then a
 * binary built from source on this machine (build/, or the user cache directory when the package
 * directory is read-only). When none of them loads, the first use builds one from source (the
 * package ships native/ and the build script; PATCHFLOW_NATIVE_BUILD=0 skips this) and loads that.
 * The x64 binaries pick their SIMD variant (avx512 / avx2 / scalar) from the CPU at load time.
 *
 * Never throws: when no addon loads, `nativeInfo()` says exactly why and what to do, and the cpu
 * backend runs on stock tfjs kernels.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { accessSync, closeSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

type F32 = Float32Array;
type I32 = Int32Array;

/** The addon's functions; every one writes into preallocated output arrays (see native/bindings.cc). */
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
  /**
   * threads; simd: the variant the kernels run (chosen at load from the CPU, or PATCHFLOW_SIMD);
   * simdCompiled: the variants in this binary; simdSupported: those this CPU runs; simdNote: why
   * PATCHFLOW_SIMD was not followed.
   */
  info(): {
    threads: number;
    simd: string;
    openmp: boolean;
    openmpNote?: string;
    simdCompiled?: string[];
    simdSupported?: string[];
    simdNote?: string;
  };
  /** Points file descriptor 2 at `path` (truncated); returns the saved descriptor (-1: unsupported). */
  stderrRedirect(path: string): number;
  stderrRestore(saved: number): void;
}

/** What scripts/build-native.mjs writes next to each binary (patchflow_cpu.json). */
export interface NativeBuild {
  /** 'prebuilt' (portable, shipped in the package) or 'source' (built on and for this machine). */
  kind: 'prebuilt' | 'source';
  /** <platform>-<arch>, e.g. linux-x64. */
  target: string;
  /** The SIMD variants compiled in (x64: scalar, avx2, avx512). */
  variants: string[];
  /** Whether built with OpenMP; prebuilt Linux binaries: libgomp.so.1 is opened at run time when installed. */
  openmp: boolean | string;
  compiler: string;
  /** The oldest glibc the binary loads on (Linux). */
  glibc?: string;
  builtAt: string;
}

export interface NativeInfo {
  /** True when the addon is loaded and its kernels are registered on the `cpu` backend. */
  loaded: boolean;
  /** Why it is not loaded, and what to do (absent when loaded). */
  reason?: string;
  /** Worker threads the native kernels use (PATCHFLOW_THREADS, default: all cores); 1 when not loaded. */
  threads: number;
  /**
   * Whether the kernels run multi-threaded (OpenMP). The prebuilt binaries open GCC's libgomp.so.1
   * at run time; without it they run on one thread and `openmpNote` says what to install.
   */
  openmp?: boolean;
  openmpNote?: string;
  /**
   * SIMD variant the kernels run: 'avx512' | 'avx2' | 'scalar', chosen when the addon loads from what
   * the CPU supports (PATCHFLOW_SIMD forces one); 'none' when not loaded.
   */
  simd: string;
  /** The SIMD variants in the loaded binary that this CPU can run. */
  simdSupported?: string[];
  /** Why PATCHFLOW_SIMD was not followed (an unsupported or unknown variant). */
  simdNote?: string;
  /** Path of the loaded addon. */
  path?: string;
  /**
   * Which binary loaded: 'prebuilt' (shipped in the package), 'source' (built from source on this
   * machine) or 'env' (PATCHFLOW_NATIVE=path).
   */
  origin?: 'prebuilt' | 'source' | 'env';
  /** The loaded binary's build record (compiler, target, variants), when it has one. */
  build?: NativeBuild;
}

const ADDON = 'patchflow_cpu.node';
const PREBUILT_TARGETS = ['linux-x64', 'linux-arm64'];

let addon: NativeAddon | undefined;
let info: NativeInfo | undefined;

/** The package's root directory (dist/index.js -> .., src/cpu/native.ts -> ../..). */
function packageRoot(): string | undefined {
  for (const rel of ['..', '../..']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    try {
      if (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).name === '@patchflow/tensor') return dir;
    } catch {
      // not here
    }
  }
  return undefined;
}

function packageVersion(root: string): string {
  try {
    return String(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version);
  } catch {
    return '0';
  }
}

/** glibc's version on Linux (undefined: not Linux, or another libc such as musl). */
let glibc: { v: string | undefined } | undefined;
function glibcVersion(): string | undefined {
  if (glibc) return glibc.v;
  glibc = { v: undefined };
  if (process.platform !== 'linux') return undefined;
  try {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
    glibc.v = header?.glibcVersionRuntime;
  } catch {
    // no report: treat as unknown
  }
  return glibc.v;
}

/** This machine's target: <platform>-<arch>, with -musl for a Linux without glibc (no prebuilt). */
function platformTarget(): string {
  const base = `${process.platform}-${process.arch}`;
  return process.platform === 'linux' && !glibcVersion() ? `${base}-musl` : base;
}

const versionLess = (a: string, b: string) => {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) < (pb[i] ?? 0);
  }
  return false;
};

function readBuild(file: string): NativeBuild | undefined {
  try {
    const b = JSON.parse(readFileSync(file.replace(/\.node$/, '.json'), 'utf8'));
    return { kind: b.kind, target: b.target, variants: b.variants, openmp: b.openmp, compiler: b.compiler, glibc: b.glibc, builtAt: b.builtAt };
  } catch {
    return undefined;
  }
}

/** Where a source build goes when the package directory is read-only. */
function cacheDir(root: string): string {
  if (process.env.PATCHFLOW_NATIVE_CACHE) return process.env.PATCHFLOW_NATIVE_CACHE;
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'patchflow', 'native', `${packageVersion(root)}-${platformTarget()}`);
}

/** A load error in words, with what to do for the failures a user can fix. */
function explainLoadError(file: string, e: unknown): string {
  const msg = (e as Error)?.message?.split('\n')[0] ?? String(e);
  const lib = /(lib[\w+.-]+\.so[.\d]*): cannot open shared object file/.exec(msg)?.[1];
  if (lib?.startsWith('libgomp'))
    return `${file} needs GCC's OpenMP runtime ${lib}, which is not installed: apt-get install libgomp1 (Debian/Ubuntu), dnf install libgomp (Fedora/RHEL), apk add libgomp (Alpine)`;
  if (lib) return `${file} needs ${lib}, which is not installed (${msg})`;
  const glibc = /version `GLIBC_([\d.]+)' not found/.exec(msg)?.[1];
  if (glibc) return `${file} needs glibc >= ${glibc}; this system has ${glibcVersion() ?? 'an older one'}`;
  return `${file} failed to load: ${msg}`;
}

interface Candidate {
  file: string;
  origin: 'prebuilt' | 'source' | 'env';
}

/** Tries one binary; on success sets `addon` and `info`; otherwise returns why not. */
function tryLoad(c: Candidate): string | undefined {
  const build = readBuild(c.file);
  const glibc = glibcVersion();
  if (c.origin !== 'env' && build?.glibc && glibc && versionLess(glibc, build.glibc))
    return `${c.file} needs glibc >= ${build.glibc}; this system has ${glibc}`;
  const require = createRequire(import.meta.url);
  try {
    const a = require(c.file) as NativeAddon;
    const i = a.info();
    addon = a;
    info = {
      loaded: true,
      threads: i.threads,
      openmp: i.openmp,
      ...(i.openmpNote ? { openmpNote: i.openmpNote } : {}),
      simd: i.simd,
      ...(i.simdSupported ? { simdSupported: i.simdSupported } : {}),
      ...(i.simdNote ? { simdNote: i.simdNote } : {}),
      path: c.file,
      origin: c.origin,
      ...(build ? { build } : {}),
    };
    return undefined;
  } catch (e) {
    return explainLoadError(c.file, e);
  }
}

/** Builds the addon from the package's sources into `out` (scripts/build-native.mjs --from-source). */
function buildFromSource(root: string, out: string): string | undefined {
  const script = join(root, 'scripts', 'build-native.mjs');
  if (!existsSync(script) || !existsSync(join(root, 'native', 'bindings.cc'))) return 'the package has no native sources to build from';
  // One build at a time (parallel test workers, several processes starting at once): the others
  // wait for it and then load its result.
  const lock = `${out}.lock`;
  const start = Date.now();
  const mtime = () => (existsSync(out) ? statSync(out).mtimeMs : 0);
  const before = mtime(); // a binary there already did not load: build anew
  for (;;) {
    try {
      closeSync(openSync(lock, 'wx'));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') break; // cannot lock here: build unlocked
      let age = 0;
      try {
        age = Date.now() - statSync(lock).mtimeMs;
      } catch {
        continue; // released meanwhile
      }
      if (age > 15 * 60_000) rmSync(lock, { force: true }); // left by a build that died
      else if (Date.now() - start > 15 * 60_000) return `building from source: gave up waiting for another process's build (${lock})`;
      else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500);
      if (mtime() > before && !existsSync(lock)) return undefined; // the other process built it
    }
  }
  let r: SpawnSyncReturns<string>;
  try {
    if (mtime() > before) return undefined;
    process.stderr.write(
      `[patchflow] no prebuilt native cpu kernels for ${platformTarget()} loaded; building them from source into ${out} (once; about a minute; PATCHFLOW_NATIVE_BUILD=0 skips this)\n`,
    );
    r = spawnSync(process.execPath, [script, '--from-source', '--quiet', '--out', out, ...(before ? ['--force'] : [])], { encoding: 'utf8' });
  } finally {
    rmSync(lock, { force: true });
  }
  if (r.error) return `building from source failed: ${r.error.message}`;
  if (r.status !== 0 || !existsSync(out)) {
    // build-native.mjs prints "[patchflow] error: native cpu kernels not built: WHY" and "[patchflow]   WHAT TO INSTALL"
    const lines = `${r.stderr ?? ''}`
      .split('\n')
      .map((l) => l.replace(/^\[patchflow\]\s*(error:\s*)?(native cpu kernels not built:\s*)?/, '').trim())
      .filter(Boolean);
    return `building from source failed: ${lines.join('; ') || `exit code ${r.status}`}`;
  }
  return undefined;
}

function load(): void {
  if (info) return;
  const none = (reason: string): void => {
    info = { loaded: false, reason, threads: 1, simd: 'none' };
  };
  const env = process.env.PATCHFLOW_NATIVE;
  if (env === '0' || env === 'off') return none(`native kernels disabled by PATCHFLOW_NATIVE=${env}; using stock tfjs kernels`);
  if (env) {
    const why = tryLoad({ file: env, origin: 'env' });
    if (why) none(`native kernels failed to load from ${env} (PATCHFLOW_NATIVE): ${why.replace(`${env} failed to load: `, '')}; using stock tfjs kernels`);
    return;
  }
  const root = packageRoot();
  if (!root) return none('native kernels not found: cannot locate the @patchflow/tensor package directory; using stock tfjs kernels');

  const target = platformTarget();
  const sourceBuilt = [join(root, 'build', ADDON), join(cacheDir(root), ADDON)];
  const candidates: Candidate[] = [
    { file: join(root, 'prebuilds', target, ADDON), origin: 'prebuilt' },
    ...sourceBuilt.map((file) => ({ file, origin: 'source' as const })),
  ];
  const failures: string[] = [];
  for (const c of candidates) {
    if (!existsSync(c.file)) continue;
    const why = tryLoad(c);
    if (!why) return;
    failures.push(why);
  }
  if (!existsSync(candidates[0]!.file))
    failures.unshift(
      PREBUILT_TARGETS.includes(target)
        ? `no prebuilt binary: ${candidates[0]!.file} is missing (a copy of the package built without it; in the patchflow repository: npm run build in packages/tensor)`
        : `no prebuilt binary for ${target} (prebuilt: ${PREBUILT_TARGETS.join(', ')}, glibc)`,
    );

  const script = join(root, 'scripts', 'build-native.mjs');
  const how = `\`node ${script} --from-source\` builds them (then they load by themselves), or point PATCHFLOW_NATIVE at a patchflow_cpu.node`;
  if (process.env.PATCHFLOW_NATIVE_BUILD === '0') {
    failures.push(
      `building from source skipped (PATCHFLOW_NATIVE_BUILD=0): ${how} (it needs a C++17 compiler with OpenMP: apt-get install g++, dnf install gcc-c++, apk add g++, or xcode-select --install)`,
    );
  } else {
    let out = sourceBuilt[0]!;
    try {
      mkdirSync(dirname(out), { recursive: true });
      accessSync(dirname(out), constants.W_OK);
    } catch {
      out = sourceBuilt[1]!;
    }
    const buildErr = buildFromSource(root, out);
    if (!buildErr) {
      const why = tryLoad({ file: out, origin: 'source' });
      if (!why) return;
      failures.push(`the binary built from source does not load: ${why}`);
    } else {
      failures.push(`${buildErr}; then ${how}`);
    }
  }
  none(`native kernels not loaded: ${failures.join('; ')}; using stock tfjs kernels`);
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
