/**
 * The published packages work outside the monorepo, as a user installs them (issue 13): `npm pack`
 * the eight published packages and both examples, install the tarballs in a scratch project in the
 * system temp directory (their third-party dependencies from npm's cache or the registry:
 * --prefer-offline), and check there, in child processes, that
 *   - there is one @patchflow/tensor (its siblings and the third-party backend take it as a peer),
 *     and the native cpu kernels load from the shipped prebuilt binary;
 *   - a trainer composed from code (patch-level + sparsity + an own plugin on rdu-sim) runs and
 *     checks itself (examples/custom-trainer);
 *   - an external backend package registers into that one registry: its own check (kernels vs
 *     finite differences, training vs tfjs-cpu) passes, and the CLI finds it through
 *     PATCHFLOW_BACKEND_MODULES and trains on it;
 *   - a run exported as a Hugging Face directory imports back with identical logits;
 *   - CommonJS consumers can require() the packages.
 *
 * SLOW (about a minute: npm pack + npm install). Needs `npm run build` first (dist/ and prebuilds/).
 * PATCHFLOW_SKIP_PACKAGE_TEST=1 skips it.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { wordCorpus } from '@patchflow/test-fixtures';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const PUBLISHED = ['tensor', 'trainer', 'patch-training', 'sparsity', 'dataflow-runtime', 'backend-gpu', 'backend-rdu-sim', 'cli'].map((p) => `packages/${p}`);
const EXAMPLES = ['examples/third-party-backend', 'examples/custom-trainer'];
const skip = process.env.PATCHFLOW_SKIP_PACKAGE_TEST === '1' || !['linux-x64', 'linux-arm64'].includes(`${process.platform}-${process.arch}`);
const TINY = ['--layers', '1', '--d-model', '32', '--heads', '2', '--seq-len', '16', '--batch-size', '4'];

describe.skipIf(skip)('the packed packages in a scratch project (slow: npm pack + npm install)', () => {
  let dir = '';
  let app = '';
  const tarballs: Record<string, string> = {};

  const node = (args: string[], env: Record<string, string | undefined> = {}): SpawnSyncReturns<string> =>
    spawnSync(process.execPath, args, {
      cwd: app,
      encoding: 'utf8',
      timeout: 300_000,
      env: { ...process.env, PATCHFLOW_BACKEND_MODULES: undefined, PATCHFLOW_NATIVE: undefined, PATCHFLOW_SIMD: undefined, PATCHFLOW_DEBUG: undefined, ...env },
    });
  const cli = (args: string[], env: Record<string, string | undefined> = {}) => node([path.join(app, 'node_modules', '@patchflow', 'cli', 'bin', 'patchflow.js'), ...args], env);
  const ok = (r: SpawnSyncReturns<string>) => expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);

  beforeAll(() => {
    for (const p of PUBLISHED) expect(fs.existsSync(path.join(REPO, p, 'dist', 'index.js')), `${p}/dist missing: run \`npm run build\` first`).toBe(true);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'patchflow-consumer-'));
    // --ignore-scripts: the packages are built already (tensor's prepack would only check that)
    const pack = spawnSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dir, '--loglevel=error', ...[...PUBLISHED, ...EXAMPLES].flatMap((w) => ['-w', w])], {
      cwd: REPO,
      encoding: 'utf8',
      timeout: 300_000,
    });
    expect(pack.status, pack.stderr).toBe(0);
    for (const t of JSON.parse(pack.stdout) as { name: string; filename: string }[]) tarballs[t.name] = path.join(dir, t.filename);
    expect(Object.keys(tarballs)).toHaveLength(PUBLISHED.length + EXAMPLES.length);
    app = path.join(dir, 'app');
    fs.mkdirSync(app);
    const dependencies = Object.fromEntries(Object.entries(tarballs).map(([name, file]) => [name, `file:${file}`]));
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module', dependencies }, null, 2));
    fs.writeFileSync(path.join(app, 'corpus.txt'), wordCorpus());
    const inst = spawnSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app, encoding: 'utf8', timeout: 600_000 });
    expect(inst.status, inst.stderr).toBe(0);
  }, 900_000);

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('installs one copy of each package (siblings are peers), with the prebuilt native kernels loaded', () => {
    // `npm ls --parseable` prints the directory of every installed copy
    const copies = (name: string) => {
      const r = spawnSync('npm', ['ls', name, '--all', '--parseable'], { cwd: app, encoding: 'utf8' });
      return new Set(r.stdout.split('\n').filter((l) => l.endsWith(path.join('node_modules', name))));
    };
    for (const name of ['@patchflow/tensor', '@patchflow/trainer']) expect(copies(name).size, name).toBe(1);
    const r = node(['--input-type=module', '-e', "const t = await import('@patchflow/tensor'); await t.useBackend('cpu'); console.log(JSON.stringify(t.nativeInfo()))"], { PATCHFLOW_NATIVE_BUILD: '0' });
    ok(r);
    const info = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(info.loaded, info.reason).toBe(true);
    expect(info.origin).toBe('prebuilt');
    expect(info.path).toContain(path.join(app, 'node_modules', '@patchflow', 'tensor', 'prebuilds'));
  });

  it('a trainer composed from code (patch + sparsity + its own plugin, on rdu-sim) runs and checks itself', () => {
    const r = node([path.join(app, 'node_modules', '@patchflow', 'example-custom-trainer', 'index.mjs'), '--check']);
    ok(r);
    expect(r.stdout).toMatch(/check passed/);
  });

  it("the third-party backend's own check passes (kernels vs finite differences, training vs tfjs-cpu)", () => {
    const r = node([path.join(app, 'node_modules', '@patchflow', 'example-js-backend', 'check.mjs')]);
    ok(r);
    expect(r.stdout).toMatch(/losses .* = tfjs-cpu's/);
  });

  it('the CLI finds the external backend through PATCHFLOW_BACKEND_MODULES and trains on it', () => {
    const env = { PATCHFLOW_BACKEND_MODULES: '@patchflow/example-js-backend' };
    const list = cli(['backends'], env);
    ok(list);
    expect(list.stdout).toMatch(/^js-cpu\s+yes\s/m);
    const r = cli(['train', '--backend', 'js-cpu', '--data', 'corpus.txt', '--steps', '4', '--out', 'run-js', '--quiet', ...TINY], env);
    ok(r);
    const metrics = fs.readFileSync(path.join(app, 'run-js', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics.filter((m) => typeof m.loss === 'number').map((m) => m.step)).toEqual([1, 2, 3, 4]);
    // without the module the name is unknown, in one line
    const missing = cli(['train', '--backend', 'js-cpu', '--data', 'corpus.txt', '--steps', '1', '--out', 'run-none', ...TINY]);
    expect(missing.status).toBe(2);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).toMatch(/unknown backend "js-cpu"/);
  });

  it('a run exported as a Hugging Face directory imports back with identical logits', () => {
    ok(cli(['train', '--data', 'corpus.txt', '--steps', '3', '--out', 'run-hf', '--quiet', ...TINY]));
    ok(cli(['export', '--format', 'hf', '--checkpoint', 'run-hf', '--out', 'hf']));
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) expect(fs.existsSync(path.join(app, 'hf', f)), f).toBe(true);
    ok(cli(['import', '--format', 'hf', '--from', 'hf', '--out', 'run-back']));
    const script = `
      import { tf } from '@patchflow/tensor';
      import { loadTrainedModel } from '@patchflow/trainer';
      const ids = tf.tensor2d([[1, 5, 9, 13, 2, 7, 11, 3]], [1, 8], 'int32');
      const out = [];
      for (const dir of ['run-hf', 'run-back']) out.push(Array.from((await loadTrainedModel(dir)).model.forward(ids).dataSync()));
      console.log(JSON.stringify(out));`;
    const r = node(['--input-type=module', '-e', script]);
    ok(r);
    const [a, b] = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as number[][];
    expect(a.length).toBeGreaterThan(0);
    expect(b).toEqual(a);
  });

  it('CommonJS consumers can require() every package (require(esm)), or get one clear line where Node cannot', () => {
    const names = PUBLISHED.map((p) => `@patchflow/${path.basename(p)}`);
    fs.writeFileSync(path.join(app, 'cjs.cjs'), `for (const n of ${JSON.stringify(names)}) process.stdout.write(n + ' ' + Object.keys(require(n)).length + '\\n');\n`);
    const r = node(['cjs.cjs']);
    const [maj, min] = process.versions.node.split('.').map(Number);
    if (maj > 22 || (maj === 22 && min >= 12) || (maj === 20 && min >= 19)) {
      ok(r);
      for (const n of names) expect(r.stdout).toMatch(new RegExp(`${n} [1-9]`));
    } else {
      expect(r.stderr).toMatch(/ERR_PATCHFLOW_ESM_ONLY|is an ES module package/);
    }
  });
});
