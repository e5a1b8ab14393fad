#!/usr/bin/env node
// Compiles native/*.cc into build/patchflow_cpu.node (the patchflow cpu backend's kernels).
// Never fails the package build: without a compiler, or when compilation fails, it prints one
// warning line and exits 0; the cpu backend then runs on stock tfjs kernels and says so.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = path.join(root, 'native');
const outDir = path.join(root, 'build');
const out = path.join(outDir, 'patchflow_cpu.node');
const warn = (msg) => {
  console.warn(`[patchflow] warning: native cpu kernels not built (${msg}); the cpu backend will use stock tfjs kernels`);
  process.exit(0);
};

if (process.env.PATCHFLOW_SKIP_NATIVE === '1') warn('PATCHFLOW_SKIP_NATIVE=1');
if (!existsSync(nativeDir)) warn('native/ sources missing');
const files = readdirSync(nativeDir).filter((f) => /\.(cc|cpp|h|hpp)$/.test(f));
const sources = files.filter((f) => /\.(cc|cpp)$/.test(f)).map((f) => path.join(nativeDir, f));
if (!sources.length) warn('no native/*.cc sources');

// Up to date? (the .node is newer than every source and header, and than this script)
if (existsSync(out)) {
  const built = statSync(out).mtimeMs;
  const inputs = [...files.map((f) => path.join(nativeDir, f)), fileURLToPath(import.meta.url)];
  if (inputs.every((f) => statSync(f).mtimeMs <= built) && process.env.PATCHFLOW_FORCE_NATIVE !== '1') {
    console.log('[patchflow] native cpu kernels up to date');
    process.exit(0);
  }
}

const cxx = process.env.CXX || 'g++';
const probe = spawnSync(cxx, ['--version'], { encoding: 'utf8' });
if (probe.error || probe.status !== 0) warn(`${cxx} not found`);

const includeCandidates = [
  process.env.NODE_INCLUDE_DIR,
  path.resolve(path.dirname(process.execPath), '..', 'include', 'node'),
  '/usr/include/node',
  '/usr/local/include/node',
].filter(Boolean);
const include = includeCandidates.find((d) => existsSync(path.join(d, 'node_api.h')));
if (!include) warn('Node headers (node_api.h) not found; set NODE_INCLUDE_DIR');

mkdirSync(outDir, { recursive: true });
const tmp = `${out}.tmp-${process.pid}`;
const march = process.env.PATCHFLOW_MARCH || 'native';
const args = ['-O3', `-march=${march}`, '-fopenmp', '-shared', '-fPIC', '-std=c++17', '-fno-math-errno', '-DNAPI_VERSION=8',
  `-I${include}`, ...sources, '-o', tmp];
if (process.platform === 'darwin') args.push('-undefined', 'dynamic_lookup');
const t0 = Date.now();
const r = spawnSync(cxx, args, { encoding: 'utf8' });
if (r.error || r.status !== 0) {
  rmSync(tmp, { force: true });
  const first = (r.stderr || String(r.error || '')).split('\n').find((l) => /error/i.test(l)) || 'unknown error';
  warn(`${cxx} failed: ${first.trim()}`);
}
renameSync(tmp, out);
console.log(`[patchflow] built ${path.relative(root, out)} (${cxx} -march=${march} -fopenmp) in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
