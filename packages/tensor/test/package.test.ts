/**
 * The packed package works outside the monorepo: `npm pack` this package, install the tarball in a
 * scratch project in the system temp directory (its tfjs dependencies from the registry, or npm's
 * cache: --prefer-offline), and check in child processes that the native kernels load there and
 * compute correctly.
 *
 * SLOW (about 1-2 minutes: npm pack, npm install, one build from source). Needs `npm run build`
 * first (dist/ and prebuilds/), npm and g++. PATCHFLOW_SKIP_PACKAGE_TEST=1 skips it.
 *
 * 1. the prebuilt binary loads with no compiler involved (PATCHFLOW_NATIVE_BUILD=0): no install
 *    script is needed (npm 11 runs none for dependencies unless approved);
 * 2. without libgomp.so.1 (hidden in a private mount namespace; root only) it still loads and runs
 *    on one thread, and says what to install;
 * 3. without a prebuilt binary for the platform (simulated by deleting prebuilds/ from the installed
 *    copy), the first use builds one from the shipped sources, and it loads;
 * 4. when that cannot work (no compiler), nativeInfo() says why and what to do.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const target = `${process.platform}-${process.arch}`;
const prebuilt = join(root, 'prebuilds', target, 'patchflow_cpu.node');
const skip = process.env.PATCHFLOW_SKIP_PACKAGE_TEST === '1' || !['linux-x64', 'linux-arm64'].includes(target);

// The scratch project's program: the cpu backend's matmul and LayerNorm vs float64 references.
const APP = `
import { tf, useBackend, nativeInfo, layerNorm } from '@patchflow/tensor';
await useBackend('cpu');
const rnd = (n, s) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + s * 78.233));
const [m, k, n] = [37, 53, 29];
const av = rnd(m * k, 1), bv = rnd(k * n, 2);
const c = tf.matMul(tf.tensor2d(av, [m, k]), tf.tensor2d(bv, [k, n])).dataSync();
let err = 0;
for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
  let s = 0; for (let p = 0; p < k; p++) s += av[i * k + p] * bv[p * n + j];
  err = Math.max(err, Math.abs(s - c[i * n + j]));
}
const y = layerNorm(tf.tensor2d(av, [m, k]), tf.ones([k]), tf.zeros([k])).dataSync();
for (let i = 0; i < m; i++) {
  const row = av.subarray(i * k, i * k + k);
  const mu = row.reduce((a, b) => a + b, 0) / k;
  const v = row.reduce((a, b) => a + (b - mu) ** 2, 0) / k;
  for (let p = 0; p < k; p++) err = Math.max(err, Math.abs((row[p] - mu) / Math.sqrt(v + 1e-5) - y[i * k + p]));
}
console.log(JSON.stringify({ info: nativeInfo(), backend: tf.getBackend(), err }));
`;

describe.skipIf(skip)('the packed @patchflow/tensor outside the monorepo (slow: npm pack + install + a source build)', () => {
  let dir = '';
  let app = '';
  let installed = '';

  const run = (env: Record<string, string | undefined>) => {
    const r = spawnSync(process.execPath, ['app.mjs'], { cwd: app, encoding: 'utf8', env: { ...process.env, PATCHFLOW_NATIVE: undefined, PATCHFLOW_SIMD: undefined, ...env }, timeout: 600_000 });
    expect(r.status, r.stderr).toBe(0);
    return { ...(JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { info: Record<string, any>; backend: string; err: number }), stderr: r.stderr };
  };

  beforeAll(() => {
    expect(existsSync(prebuilt), `${prebuilt} missing: run \`npm run build\` in packages/tensor first`).toBe(true);
    expect(existsSync(join(root, 'dist', 'index.js')), 'dist/ missing: run `npm run build` first').toBe(true);
    dir = mkdtempSync(join(tmpdir(), 'patchflow-pack-'));
    const pack = spawnSync('npm', ['pack', '--pack-destination', dir, '--loglevel=error'], { cwd: root, encoding: 'utf8', timeout: 300_000 });
    expect(pack.status, pack.stderr).toBe(0);
    const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    expect(tgz).toBeDefined();
    app = join(dir, 'app');
    spawnSync('mkdir', ['-p', app]);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }));
    writeFileSync(join(app, 'app.mjs'), APP);
    const inst = spawnSync('npm', ['install', join(dir, tgz!), '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], {
      cwd: app,
      encoding: 'utf8',
      timeout: 300_000,
    });
    expect(inst.status, inst.stderr).toBe(0);
    installed = join(app, 'node_modules', '@patchflow', 'tensor');
    expect(existsSync(installed)).toBe(true);
  }, 600_000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the tarball has the prebuilt binary, every native source and header, no tests or TS sources', () => {
    const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'))!;
    const list = spawnSync('tar', ['-tzf', join(dir, tgz)], { encoding: 'utf8' }).stdout.split('\n');
    for (const f of readdirSync(join(root, 'native'))) expect(list, f).toContain(`package/native/${f}`);
    expect(list).toContain(`package/prebuilds/${target}/patchflow_cpu.node`);
    expect(list).toContain('package/scripts/build-native.mjs');
    expect(list.some((f) => f.startsWith('package/src/') || f.startsWith('package/test/'))).toBe(false);
  });

  it('loads the prebuilt binary (no compiler, no install script) and computes correctly', () => {
    const r = run({ PATCHFLOW_NATIVE_BUILD: '0' });
    expect(r.info.loaded, r.info.reason).toBe(true);
    expect(r.info.origin).toBe('prebuilt');
    expect(r.info.path).toBe(join(installed, 'prebuilds', target, 'patchflow_cpu.node'));
    expect(r.info.build.kind).toBe('prebuilt');
    expect(r.info.simdSupported).toContain(r.info.simd);
    expect(r.info.openmp).toBe(true);
    expect(r.backend).toBe('patchflow-cpu');
    expect(r.err).toBeLessThan(1e-4);
  });

  // Hides libgomp.so.1 from the child (as on a slim container image): an overlay in a private
  // mount namespace whites its files out (needs root and unshare, as .ci/without-vulkan).
  const root0 = process.getuid?.() === 0 && !spawnSync('unshare', ['--version'], { stdio: 'ignore' }).error;
  it.skipIf(!root0)('without libgomp.so.1 the prebuilt binary still loads, runs on one thread and says what to install', () => {
    const hide = [
      'set -e',
      'for d in $(ldconfig -p | awk \'/libgomp\\.so/{print $NF}\' | xargs -r -n1 dirname | xargs -r -n1 realpath | sort -u); do',
      '  t=$(mktemp -d); mount -t tmpfs tmpfs "$t"; mkdir "$t/up" "$t/work"',
      '  for f in "$d"/libgomp.so*; do mknod "$t/up/$(basename "$f")" c 0 0; done',
      '  mount -t overlay overlay -o "lowerdir=$d,upperdir=$t/up,workdir=$t/work" "$d"',
      'done',
      `exec "${process.execPath}" app.mjs`,
    ].join('\n');
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', hide], {
      cwd: app,
      encoding: 'utf8',
      env: { ...process.env, PATCHFLOW_NATIVE: undefined, PATCHFLOW_SIMD: undefined, PATCHFLOW_NATIVE_BUILD: '0' },
      timeout: 300_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { info: Record<string, any>; err: number };
    expect(out.info.loaded, out.info.reason).toBe(true);
    expect(out.info.origin).toBe('prebuilt');
    expect(out.info.openmp).toBe(false);
    expect(out.info.threads).toBe(1);
    expect(out.info.openmpNote).toMatch(/libgomp\.so\.1 .* is not installed.*apt-get install libgomp1/);
    expect(out.err).toBeLessThan(1e-4);
  });

  it('without a prebuilt binary for the platform, the first use builds one from the shipped sources', () => {
    rmSync(join(installed, 'prebuilds'), { recursive: true, force: true });
    const r = run({});
    expect(r.stderr).toMatch(/building them from source/);
    expect(r.info.loaded, r.info.reason).toBe(true);
    expect(r.info.origin).toBe('source');
    expect(r.info.path).toBe(join(installed, 'build', 'patchflow_cpu.node'));
    expect(r.info.build.kind).toBe('source');
    expect(r.err).toBeLessThan(1e-4);
    // the next process loads it without building again
    const again = run({});
    expect(again.stderr).not.toMatch(/building them from source/);
    expect(again.info.origin).toBe('source');
  });

  it('when it cannot build, nativeInfo() says why and what to do, and the stock kernels still compute', () => {
    rmSync(join(installed, 'build'), { recursive: true, force: true });
    const r = run({ CXX: '/nonexistent/g++' });
    expect(r.info.loaded).toBe(false);
    expect(r.info.reason).toMatch(/no prebuilt binary/);
    expect(r.info.reason).toMatch(/\/nonexistent\/g\+\+ not found/);
    expect(r.info.reason).toMatch(/install a C\+\+17 compiler with OpenMP/);
    expect(r.info.reason).toMatch(/build-native\.mjs --from-source/);
    expect(r.info.reason).toMatch(/using stock tfjs kernels$/);
    expect(r.err).toBeLessThan(1e-4);
  });
});
