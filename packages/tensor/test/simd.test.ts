/**
 * Runtime CPU-feature dispatch (native/dispatch.cc): one x64 binary carries its kernels compiled
 * three times (scalar: the x86-64 baseline, avx2, avx512) and picks one when it loads.
 *
 * SLOW: "each variant passes the float64-reference tests" runs the kernel test files again in a
 * child vitest for every variant this CPU supports besides the default one (the rest of this run
 * covers that): about a minute per variant. PATCHFLOW_TEST_SIMD=avx2,scalar picks the variants,
 * PATCHFLOW_TEST_SIMD=none skips them. Where qemu-x86_64 is installed (Debian: qemu-user), the
 * binary also runs on emulated CPUs without AVX-512 and without AVX, and must pick avx2 and scalar
 * by itself and compute correctly.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { nativeInfo } from '../src/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const info = nativeInfo();
const x64 = process.arch === 'x64' && process.platform === 'linux';
const has = (cmd: string) => !spawnSync(cmd, ['--version'], { stdio: 'ignore' }).error;

/** Loads the addon in a child process with `env` and returns its info(), plus a matmul/GELU check vs float64. */
function probe(env: Record<string, string>, wrap: string[] = []) {
  const script = `
    const a = require(process.argv[1]);
    const n = 67, x = new Float32Array(n * n).map((_, k) => Math.sin(k)), y = new Float32Array(n * n);
    a.matmul(x, x, y, 1, 1, 1, n, n, n, 0, 0, null, 0, 0);
    let err = 0;
    for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) {
      let s = 0; for (let k = 0; k < n; k++) s += x[r * n + k] * x[k * n + c];
      err = Math.max(err, Math.abs(s - y[r * n + c]));
    }
    const g = new Float32Array(n * n); a.gelu(x, g, n * n);
    for (let k = 0; k < n * n; k++) {
      const v = x[k], ref = 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
      err = Math.max(err, Math.abs(g[k] - ref));
    }
    console.log(JSON.stringify({ ...a.info(), err }));`;
  const [cmd, ...pre] = [...wrap, process.execPath];
  const r = spawnSync(cmd!, [...pre, '-e', script, info.path!], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 300_000 });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { simd: string; simdSupported: string[]; simdNote?: string; err: number };
}

describe.skipIf(!info.loaded || !x64)('SIMD dispatch (x64)', () => {
  it('the binary has every variant, runs the best one this CPU supports, and says so', () => {
    expect(info.build?.variants).toEqual(['scalar', 'avx2', 'avx512']);
    expect(info.simdSupported).toContain('scalar');
    expect(info.simdSupported).toContain(info.simd);
    if (!process.env.PATCHFLOW_SIMD) expect(info.simd).toBe(info.simdSupported!.at(-1));
  });

  it('PATCHFLOW_SIMD picks a variant; an unknown or unsupported one is reported, not followed', () => {
    for (const level of info.simdSupported!) {
      const p = probe({ PATCHFLOW_SIMD: level });
      expect(p.simd).toBe(level);
      expect(p.simdNote).toBeUndefined();
      expect(p.err).toBeLessThan(1e-4);
    }
    const best = info.simdSupported!.at(-1);
    const bogus = probe({ PATCHFLOW_SIMD: 'sse9' });
    expect(bogus.simd).toBe(best);
    expect(bogus.simdNote).toMatch(/PATCHFLOW_SIMD=sse9 ignored: this binary has scalar, avx2, avx512/);
    if (!info.simdSupported!.includes('avx512')) {
      const p = probe({ PATCHFLOW_SIMD: 'avx512' });
      expect(p.simdNote).toMatch(/does not support avx512/);
    }
  });

  it('no function outside pf::avx2 / pf::avx512 uses an AVX instruction (objdump)', { skip: !has('objdump') }, () => {
    const r = spawnSync(process.execPath, ['scripts/build-native.mjs', '--check-binary', info.path!], { cwd: root, encoding: 'utf8' });
    expect(r.stdout).toMatch(/^0 function\(s\) use AVX outside their ISA variant/m);
    expect(r.status).toBe(0);
  });

  it('on emulated CPUs without AVX-512 / without AVX it picks avx2 / scalar by itself (qemu-x86_64)', { skip: !has('qemu-x86_64'), timeout: 300_000 }, () => {
    const haswell = probe({ PATCHFLOW_SIMD: '' }, ['qemu-x86_64', '-cpu', 'Haswell']);
    expect(haswell.simd).toBe('avx2');
    expect(haswell.simdSupported).toEqual(['scalar', 'avx2']);
    expect(haswell.err).toBeLessThan(1e-4);
    const nehalem = probe({ PATCHFLOW_SIMD: '' }, ['qemu-x86_64', '-cpu', 'Nehalem']);
    expect(nehalem.simd).toBe('scalar');
    expect(nehalem.simdSupported).toEqual(['scalar']);
    expect(nehalem.err).toBeLessThan(1e-4);
  });

  const wanted = process.env.PATCHFLOW_TEST_SIMD;
  const levels = (info.simdSupported ?? []).filter((l) =>
    wanted ? wanted.split(',').includes(l) : l !== info.simd,
  );
  const files = ['test/kernels.test.ts', 'test/fused.test.ts', 'test/matmul.test.ts', 'test/blocksparse.test.ts', 'test/backend.test.ts'];
  it.skipIf(!levels.length || wanted === 'none').each(levels.length ? levels : ['none'])(
    'each variant passes the float64-reference tests: %s (slow: a child vitest run)',
    { timeout: 900_000 },
    async (level) => {
      expect(existsSync(`${root}/node_modules`) || existsSync(`${root}/../../node_modules`)).toBe(true);
      const { code, out } = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const p = spawn('npx', ['vitest', 'run', ...files], {
          cwd: root,
          env: { ...process.env, PATCHFLOW_SIMD: level, PATCHFLOW_TEST_SIMD: 'none', FORCE_COLOR: '0', NO_COLOR: '1' },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (out += d));
        p.on('close', (code) => resolve({ code, out }));
      });
      expect(code, out.slice(-4000)).toBe(0);
      expect(out).toMatch(/Test Files\s+5 passed/);
    },
  );
});
