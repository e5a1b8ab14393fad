#!/usr/bin/env node
// Builds the native cpu kernels (native/*.cc: a Node-API addon, patchflow_cpu.node).
//
//   node scripts/build-native.mjs                 the package build (`npm run build`): the prebuilt
//                                                 binaries that ship in the tarball, prebuilds/<target>/,
//                                                 for this machine's platform and for every other
//                                                 prebuilt target whose cross compiler is installed
//   node scripts/build-native.mjs --from-source   a build for this machine only, into build/ (or --out):
//                                                 what the package does at first use on a platform with
//                                                 no prebuilt binary
//
// Options: --target <linux-x64|linux-arm64> (prebuild one target only), --out FILE (--from-source),
// --force (rebuild even when up to date), --require (= PATCHFLOW_REQUIRE_NATIVE=1; the package's prepack uses it), --check (verify the ISA isolation of a --from-source x64 build;
// prebuilt x64 binaries are always checked), --check-binary FILE (check any linked x64 binary),
// --print-cache-key (print what the binaries depend on besides the sources: compilers, targets; the nx
// cache key of the build), --quiet.
// Environment: CXX (the host compiler, default g++), CXX_LINUX_ARM64 / CXX_LINUX_X64 (cross compilers,
// default aarch64-linux-gnu-g++ / x86_64-linux-gnu-g++), NODE_INCLUDE_DIR (Node's headers),
// PATCHFLOW_NATIVE_CFLAGS (extra compiler flags, --from-source only), PATCHFLOW_FORCE_NATIVE=1 (= --force),
// PATCHFLOW_SKIP_NATIVE=1 (build nothing), PATCHFLOW_REQUIRE_NATIVE=1 (fail instead of warning).
//
// x86-64 binaries carry every kernel three times (isa.h): scalar (x86-64 baseline), avx2 and avx512,
// and pick one at load time from the CPU's features (dispatch.cc); nothing depends on the CPU of the
// machine that builds them (no -march=native). Each binary gets a JSON file next to it
// (patchflow_cpu.json: kind, target, compiler, variants, the glibc it needs, a key over its inputs);
// a build whose key matches is skipped.
//
// The package build never fails the install by default: without a compiler, or when compiling fails, it
// prints why and what to install, and exits 0; the cpu backend then says why it has no native kernels
// (nativeInfo().reason). PATCHFLOW_REQUIRE_NATIVE=1 (CI, `npm pack`) turns that into an error.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = path.join(root, 'native');
const scriptFile = fileURLToPath(import.meta.url);
const ADDON = 'patchflow_cpu.node';

// ---------------------------------------------------------------------------------------------
// what gets built

/** Targets that ship as prebuilt binaries in the package (prebuilds/<target>/). glibc Linux only. */
export const PREBUILT_TARGETS = ['linux-x64', 'linux-arm64'];

// Kernel files compiled once per ISA variant, and the files compiled once for the baseline. Order
// matters for the link: baseline objects first, so that the linker keeps the baseline copy of every
// standard-library template instantiation the variants share (isa.h).
const VARIANT_SOURCES = ['kernels.cc', 'tensor_ops.cc', 'matmul.cc', 'gemm.cc', 'blocksparse.cc', 'table.cc'];
const BASELINE_SOURCES = ['bindings.cc', 'dispatch.cc'];

// -fno-trapping-math (nothing reads the FP exception flags) lets the compiler if-convert, so
// vectorise, fexp's clamp in the loops that have no hand-written SIMD below AVX-512 (GELU, exp rows:
// 3-9x faster there). Not for avx512, whose intrinsics cover those loops and whose softmax and
// attention it makes ~5% slower.
const NO_TRAP = '-fno-trapping-math';
const X86_VARIANTS = [
  { name: 'scalar', flags: [NO_TRAP] },
  { name: 'avx2', flags: ['-mavx2', '-mfma', NO_TRAP] },
  // Tuned for an AVX-512 core (Ice Lake server; -mtune=generic costs 3-8% on GEMM, attention and
  // LayerNorm's gradient here, on a Zen 4, while icelake-server and znver3 tuning match -march=native),
  // with 512-bit vectors for the auto-vectorised loops too (that tuning prefers 256-bit ones; the
  // micro-kernels use zmm registers anyway).
  {
    name: 'avx512',
    flags: ['-mavx512f', '-mavx512vl', '-mavx512bw', '-mavx512dq', '-mavx2', '-mfma', '-mtune=icelake-server', '-mprefer-vector-width=512'],
  },
];
const GENERIC_VARIANTS = [{ name: 'scalar', flags: [NO_TRAP] }];

const COMMON_FLAGS = ['-O3', '-std=c++17', '-fPIC', '-fno-math-errno', '-fvisibility=hidden'];

const hostTarget = () => `${process.platform}-${process.arch}`;
const isX64 = (target) => target.endsWith('-x64');

/** The compiler for a target: CXX for this machine's own target, a cross compiler otherwise. */
function compilerFor(target) {
  if (target === hostTarget()) return process.env.CXX || 'g++';
  const env = `CXX_${target.toUpperCase().replace(/-/g, '_')}`;
  if (process.env[env]) return process.env[env];
  if (target === 'linux-arm64') return 'aarch64-linux-gnu-g++';
  if (target === 'linux-x64') return 'x86_64-linux-gnu-g++';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// helpers

class BuildError extends Error {}

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const option = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const quiet = flag('--quiet');
const log = (msg) => {
  if (!quiet) console.log(`[patchflow] ${msg}`);
};

function run(cmd, argv) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8' });
  return { ok: !r.error && r.status === 0, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}

function compilerVersion(cxx) {
  const r = run(cxx, ['--version']);
  return r.ok ? r.stdout.split('\n')[0].trim() : undefined;
}

function nodeInclude() {
  const candidates = [
    process.env.NODE_INCLUDE_DIR,
    path.resolve(path.dirname(process.execPath), '..', 'include', 'node'),
    path.join(os.homedir(), '.cache', 'node-gyp', process.versions.node, 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ].filter(Boolean);
  return candidates.find((d) => existsSync(path.join(d, 'node_api.h')));
}

function sourceFiles() {
  return readdirSync(nativeDir)
    .filter((f) => /\.(cc|h|map)$/.test(f))
    .sort();
}

/** A hash of the sources (native/) and of this script. */
function sourcesHash() {
  const h = createHash('sha256');
  for (const f of sourceFiles()) h.update(f).update('\0').update(readFileSync(path.join(nativeDir, f))).update('\0');
  h.update(readFileSync(scriptFile));
  return h.digest('hex').slice(0, 32);
}

/** A key over everything a binary is made of: sources, this script, compiler, target, flags. */
function buildKey(parts) {
  return createHash('sha256').update(sourcesHash()).update(JSON.stringify(parts)).digest('hex').slice(0, 32);
}

function readMeta(file) {
  try {
    return JSON.parse(readFileSync(file.replace(/\.node$/, '.json'), 'utf8'));
  } catch {
    return undefined;
  }
}

/** Runs the compile jobs, `jobs` at a time; rejects with the first failure's compiler output. */
async function runJobs(cmds, jobs) {
  let next = 0;
  let failed;
  const worker = async () => {
    while (next < cmds.length && !failed) {
      const [cxx, argv] = cmds[next++];
      const r = await new Promise((resolve) => {
        const p = spawn(cxx, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        p.stderr.on('data', (d) => (err += d));
        p.on('error', (e) => resolve({ code: -1, err: String(e) }));
        p.on('close', (code) => resolve({ code, err }));
      });
      if (r.code !== 0) failed ??= r.err || `${cxx} exited with ${r.code}`;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, jobs) }, worker));
  if (failed) throw new BuildError(failed);
}

function firstError(text) {
  const lines = String(text).split('\n');
  return (lines.find((l) => /\berror\b/i.test(l)) || lines.find((l) => l.trim()) || 'unknown error').trim();
}

/** Whether cxx compiles and links an OpenMP program (Apple clang does not without libomp). */
function hasOpenMP(cxx, tmp) {
  const src = path.join(tmp, 'omp-probe.cc');
  writeFileSync(src, '#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n');
  return run(cxx, ['-fopenmp', src, '-o', path.join(tmp, 'omp-probe')]).ok;
}

/** The dynamic symbols the binary needs from elsewhere (undefined: no nm). */
function undefinedSymbols(file, target) {
  const triple = target === hostTarget() ? '' : target === 'linux-arm64' ? 'aarch64-linux-gnu-' : 'x86_64-linux-gnu-';
  for (const tool of [`${triple}nm`, 'nm']) {
    const r = run(tool, ['-D', '--undefined-only', file]);
    if (r.ok) return r.stdout.split('\n').map((l) => l.trim().split(/\s+/).at(-1)?.split('@')[0]).filter(Boolean);
  }
  return undefined;
}

/** The highest GLIBC_x.y symbol version the binary needs (undefined: not a glibc binary / no objdump). */
function glibcNeeded(file, target) {
  const triple = target === hostTarget() ? '' : target === 'linux-arm64' ? 'aarch64-linux-gnu-' : 'x86_64-linux-gnu-';
  for (const tool of [`${triple}objdump`, 'objdump']) {
    const r = run(tool, ['-T', file]);
    if (!r.ok) continue;
    const versions = [...r.stdout.matchAll(/GLIBC_(\d+)\.(\d+)(?:\.(\d+))?/g)].map((m) => [+m[1], +m[2], +(m[3] ?? 0)]);
    if (!versions.length) return undefined;
    versions.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
    const v = versions.at(-1);
    return v[2] ? v.join('.') : `${v[0]}.${v[1]}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// the build

/**
 * Compiles and links one binary. kind: 'prebuilt' (portable: baseline flags, for a shipped target) or
 * 'source' (for this machine; PATCHFLOW_NATIVE_CFLAGS apply). Returns the metadata written next to it.
 */
async function buildOne({ target, out, kind, force }) {
  const cxx = compilerFor(target);
  const version = cxx && compilerVersion(cxx);
  if (!version) {
    const what = target === hostTarget() ? `${cxx} not found` : `cross compiler ${cxx} for ${target} not found`;
    throw new BuildError(what);
  }
  const include = nodeInclude();
  if (!include) throw new BuildError('Node headers (node_api.h) not found; set NODE_INCLUDE_DIR');

  const x64 = isX64(target);
  const variants = x64 ? X86_VARIANTS : GENERIC_VARIANTS;
  // prebuilt: the target's baseline, nothing of the build machine. source: the compiler's defaults
  // (plus PATCHFLOW_NATIVE_CFLAGS), e.g. -march=native for a build that stays on this machine.
  const baseline =
    kind === 'prebuilt'
      ? x64
        ? ['-march=x86-64', '-mtune=generic']
        : target.endsWith('-arm64')
          ? ['-march=armv8-a']
          : []
      : (process.env.PATCHFLOW_NATIVE_CFLAGS || '').split(/\s+/).filter(Boolean);
  const tmp = mkdtempSync(path.join(os.tmpdir(), `patchflow-native-${target}-`));
  try {
    const openmp = hasOpenMP(cxx, tmp);
    if (!openmp && kind === 'prebuilt') throw new BuildError(`${cxx} cannot build OpenMP programs (libgomp missing?)`);
    const omp = openmp ? ['-fopenmp'] : [];
    const have = variants.filter((v) => v.name !== 'scalar').map((v) => `-DPF_HAVE_${v.name.toUpperCase()}=1`);
    // Prebuilt Linux binaries do not link libgomp (it would be a hard dependency, and libgomp.a
    // cannot go into a shared object): omp_shim.cc forwards to libgomp.so.1 when it is installed
    // and runs on one thread when not. Source builds link the compiler's OpenMP runtime.
    const shim = openmp && kind === 'prebuilt' && target.startsWith('linux');
    const key = buildKey({ target, kind, version, baseline, variants, openmp, shim, common: COMMON_FLAGS });
    const meta = readMeta(out);
    if (!force && meta?.key === key && existsSync(out)) {
      log(`${path.relative(root, out)} up to date`);
      return meta;
    }

    const t0 = Date.now();
    const cmds = [];
    const objects = [];
    const compile = (src, extra, obj) => {
      cmds.push([cxx, [...COMMON_FLAGS, ...omp, ...baseline, ...extra, `-I${nativeDir}`, '-c', path.join(nativeDir, src), '-o', obj]]);
      objects.push(obj);
    };
    for (const src of [...BASELINE_SOURCES, ...(shim ? ['omp_shim.cc'] : [])])
      compile(src, [...have, `-I${include}`, '-DNAPI_VERSION=8', ...(shim ? ['-DPF_OMP_SHIM=1'] : [])], path.join(tmp, `base-${src}.o`));
    for (const v of variants)
      for (const src of VARIANT_SOURCES) compile(src, [`-DPF_ISA=${v.name}`, ...v.flags], path.join(tmp, `${v.name}-${src}.o`));
    await runJobs(cmds, Number(process.env.PATCHFLOW_NATIVE_JOBS) || os.availableParallelism?.() || os.cpus().length);

    const linkOut = path.join(tmp, ADDON);
    const link = ['-shared', ...(shim ? [] : omp), '-o', linkOut, ...objects];
    if (target.startsWith('darwin')) link.push('-undefined', 'dynamic_lookup');
    else link.push('-Wl,-z,noexecstack', '-Wl,--as-needed', `-Wl,--version-script=${path.join(nativeDir, 'exports.map')}`);
    const r = run(cxx, link);
    if (!r.ok) throw new BuildError(`link failed: ${firstError(r.stderr || r.error)}`);

    if (shim) {
      const unresolved = undefinedSymbols(linkOut, target)?.filter((n) => /^(GOMP_|omp_|__kmpc)/.test(n));
      if (unresolved === undefined) throw new BuildError('nm not found: cannot check the OpenMP entry points');
      if (unresolved.length)
        throw new BuildError(`${cxx} emits OpenMP entry points that native/omp_shim.cc does not forward: ${unresolved.join(', ')}`);
    }
    const info = {
      kind,
      target,
      variants: variants.map((v) => v.name),
      openmp: shim ? 'libgomp.so.1 when installed (dlopen), else one thread' : openmp,
      compiler: version,
      flags: baseline.join(' '),
      glibc: target.startsWith('linux') ? glibcNeeded(linkOut, target) : undefined,
      sources: sourcesHash(),
      key,
      builtAt: new Date().toISOString(),
    };
    if (x64 && (kind === 'prebuilt' || flag('--check'))) {
      const problems = checkIsolation(linkOut, target);
      if (problems === undefined) log('warning: objdump not found; ISA isolation not checked');
      else if (problems.length) throw new BuildError(`ISA isolation check failed:\n  ${problems.slice(0, 10).join('\n  ')}`);
    }
    mkdirSync(path.dirname(out), { recursive: true });
    const tmpOut = `${out}.tmp-${process.pid}`;
    writeFileSync(tmpOut, readFileSync(linkOut));
    renameSync(tmpOut, out);
    writeFileSync(out.replace(/\.node$/, '.json'), JSON.stringify(info, null, 2) + '\n');
    log(
      `built ${path.relative(root, out) || out} (${target}, ${info.variants.join('/')}${openmp ? (shim ? ', libgomp optional' : '') : ', no OpenMP: single-threaded'}, ${version.replace(/\s*\(.*?\)\s*/, ' ')}${info.glibc ? `, needs glibc >= ${info.glibc}` : ''}) in ${((Date.now() - t0) / 1000).toFixed(1)}s`,
    );
    if (!openmp) log(`warning: ${cxx} has no OpenMP; the native kernels run single-threaded (install libgomp, or libomp on macOS)`);
    return info;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// ISA isolation: in a linked x86-64 binary, only functions of pf::avx2 / pf::avx512 may use AVX
// (VEX/EVEX) instructions, and only pf::avx512 functions may use AVX-512 (zmm or mask registers).
// Everything else (bindings, dispatch, the scalar variant, shared standard-library code) must run on
// the x86-64 baseline. Returns the offending functions, or undefined when objdump is missing.

function checkIsolation(file, target) {
  const tool = target === hostTarget() ? 'objdump' : 'x86_64-linux-gnu-objdump';
  const r = spawnSync(tool, ['-d', '-C', '--no-show-raw-insn', file], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.error || r.status !== 0) return undefined;
  const problems = [];
  let fn = '';
  let avx = false;
  let avx512 = false;
  const flush = () => {
    if (!fn) return;
    const inAvx512 = fn.includes('pf::avx512::');
    const inAvx2 = fn.includes('pf::avx2::');
    if (avx512 && !inAvx512) problems.push(`${fn}: AVX-512 outside pf::avx512`);
    else if (avx && !inAvx512 && !inAvx2) problems.push(`${fn}: AVX outside pf::avx2 / pf::avx512`);
  };
  for (const line of r.stdout.split('\n')) {
    const head = /^[0-9a-f]+ <(.*)>:$/.exec(line);
    if (head) {
      flush();
      fn = head[1];
      avx = avx512 = false;
      continue;
    }
    const ins = /^\s+[0-9a-f]+:\s+(\S+)\s*(.*)$/.exec(line);
    if (!ins) continue;
    const [, mnem, ops] = ins;
    if (/%zmm|%k[0-7]\b|\{%k/.test(ops) || /^k(mov|and|or|xor|not|shift|test|unpck|add)/.test(mnem)) avx512 = avx = true;
    else if (/%ymm/.test(ops) || (/^v/.test(mnem) && !/^(verr|verw|vmcall|vmlaunch|vmresume|vmxoff|vmxon|vmread|vmwrite|vmptr|vmclear|vmfunc)/.test(mnem))) avx = true;
  }
  flush();
  return problems;
}

// ---------------------------------------------------------------------------------------------
// main

function fail(msg, hint) {
  const required = process.env.PATCHFLOW_REQUIRE_NATIVE === '1' || flag('--require');
  const text = `native cpu kernels not built: ${msg}${hint ? `\n[patchflow]   ${hint}` : ''}`;
  if (required) {
    console.error(`[patchflow] error: ${text}`);
    process.exit(1);
  }
  console.warn(`[patchflow] warning: ${text}\n[patchflow]   the cpu backend will use stock tfjs kernels (nativeInfo().reason says why)`);
}

function hint(target, msg = '') {
  // the compiler is there but the sources do not compile: nothing to install
  if (msg && !/not found|cannot build OpenMP|headers/.test(msg)) return 'a compile error in native/ (report it), or set CXX to another compiler';
  if (target.startsWith('linux'))
    return 'install a C++17 compiler with OpenMP: apt-get install g++ (Debian/Ubuntu), dnf install gcc-c++ (Fedora/RHEL), apk add g++ (Alpine)';
  if (target.startsWith('darwin')) return 'install a C++ compiler: xcode-select --install (for threads also: brew install libomp, or CXX=g++-14 from brew gcc)';
  if (target.startsWith('win32')) return 'Windows is not supported by scripts/build-native.mjs; use WSL';
  return 'install g++ (C++17, OpenMP) or set CXX';
}

async function main() {
  if (option('--check-binary')) {
    // verifies the ISA isolation of a linked x86-64 binary (used by the tests)
    const problems = checkIsolation(path.resolve(option('--check-binary')), hostTarget());
    if (problems === undefined) throw new Error('objdump not found');
    for (const p of problems) console.log(p);
    console.log(`${problems.length} function(s) use AVX outside their ISA variant`);
    process.exitCode = problems.length ? 1 : 0;
    return;
  }
  if (flag('--print-cache-key')) {
    // What the package build's output depends on besides its files: the compilers and the targets
    // they can build. nx hashes this (package.json "nx" inputs, {"runtime": ...}).
    const targets = PREBUILT_TARGETS.includes(hostTarget()) ? PREBUILT_TARGETS : [hostTarget()];
    for (const t of targets) console.log(`${t}: ${(compilerFor(t) && compilerVersion(compilerFor(t))) || 'no compiler'}`);
    console.log(`node-api: ${nodeInclude() ? 'found' : 'missing'}`);
    return;
  }
  if (process.env.PATCHFLOW_SKIP_NATIVE === '1') {
    log('PATCHFLOW_SKIP_NATIVE=1: native kernels not built');
    return;
  }
  if (!existsSync(path.join(nativeDir, 'bindings.cc'))) return fail('native/ sources missing');
  const force = flag('--force') || process.env.PATCHFLOW_FORCE_NATIVE === '1';
  const host = hostTarget();

  if (flag('--from-source') || !PREBUILT_TARGETS.includes(host)) {
    const out = path.resolve(option('--out') ?? path.join(root, 'build', ADDON));
    try {
      await buildOne({ target: host, out, kind: 'source', force });
    } catch (e) {
      if (!(e instanceof BuildError)) throw e;
      const msg = e.message.startsWith('ISA') ? e.message : firstError(e.message);
      if (!flag('--from-source')) return fail(msg, hint(host, msg));
      // an explicit source build (or the first-use build of src/cpu/native.ts): an error
      console.error(`[patchflow] error: native cpu kernels not built: ${msg}\n[patchflow]   ${hint(host, msg)}`);
      process.exitCode = 1;
    }
    return;
  }

  // the package build: the prebuilt binaries
  const only = option('--target');
  const targets = only ? [only] : [host, ...PREBUILT_TARGETS.filter((t) => t !== host)];
  const required = (process.env.PATCHFLOW_REQUIRE_PREBUILDS ?? host).split(',').filter(Boolean);
  for (const target of targets) {
    const out = path.join(root, 'prebuilds', target, ADDON);
    const cross = target !== host;
    if (cross && !compilerVersion(compilerFor(target) ?? '')) {
      const msg = `no ${target} prebuilt: cross compiler ${compilerFor(target)} not installed (apt-get install g++-${target === 'linux-arm64' ? 'aarch64' : 'x86-64'}-linux-gnu)`;
      if (existsSync(out) && readMeta(out)?.sources !== sourcesHash()) {
        // built from other sources: it would ship kernels that differ from native/
        rmSync(out, { force: true });
        rmSync(out.replace(/\.node$/, '.json'), { force: true });
        log(`removed the stale ${path.relative(root, out)} (built from older sources)`);
      }
      if (required.includes(target)) fail(msg);
      else if (existsSync(out)) log(`${msg}; keeping the existing ${path.relative(root, out)} (same sources)`);
      else log(msg);
      continue;
    }
    try {
      await buildOne({ target, out, kind: 'prebuilt', force });
    } catch (e) {
      if (!(e instanceof BuildError)) throw e;
      rmSync(out, { force: true });
      rmSync(out.replace(/\.node$/, '.json'), { force: true });
      const msg = e.message.startsWith('ISA') ? e.message : firstError(e.message);
      fail(`${target}: ${msg}`, hint(target, msg));
    }
  }
  // A build/patchflow_cpu.node left by the old build script (-march=native, no metadata) would be
  // used when the prebuilt does not load; remove it. Source builds of this script (with metadata) stay.
  const legacy = path.join(root, 'build', ADDON);
  if (existsSync(legacy) && !readMeta(legacy)) {
    rmSync(legacy, { force: true });
    log('removed build/patchflow_cpu.node left by an older build (compiled with -march=native)');
  }
}

await main();
