/**
 * End-to-end tests of the `patchflow` command line: each case spawns the real CLI
 * (bin/patchflow.js over dist/, so build first: `npx nx run-many -t build`) on a tiny model and a
 * tiny corpus in a temp directory, and checks the exit code, that an error is ONE line on stderr
 * starting with `patchflow:` (never a stack trace), and that nothing already written is lost.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { wordCorpus } from '@patchflow/test-fixtures';

// each case runs the CLI a few times; a run takes about a second on a small machine
vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const CLI_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const REPO = path.resolve(CLI_DIR, '../..');
const BIN = path.join(CLI_DIR, 'bin', 'patchflow.js');

/** A model small enough that a step takes milliseconds. */
const TINY = ['--layers', '1', '--d-model', '32', '--heads', '2', '--seq-len', '16', '--batch-size', '4'];
const STEPS = 6;

let tmp = '';
let corpus = '';
const p = (...parts: string[]) => path.join(tmp, ...parts);

interface Result {
  pid?: number;
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  if (!('PATCHFLOW_BACKEND_MODULES' in extra)) delete env.PATCHFLOW_BACKEND_MODULES;
  delete env.PATCHFLOW_DEBUG;
  return env;
}

function start(args: string[], env: Record<string, string> = {}): { child: ChildProcess; done: Promise<Result> } {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: tmp, env: cliEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<Result>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr, pid: child.pid }));
  });
  return { child, done };
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return start(args, env).done;
}

const nonEmptyLines = (s: string) => s.split(/\r?\n/).filter((l) => l.trim() !== '');

function expectNoStack(r: Result): void {
  expect(r.stderr).not.toMatch(/^ {4}at /m);
  expect(r.stderr).not.toMatch(/internal error/);
}

/** The run failed with `code` and said so in exactly one `patchflow:` line matching `re`. */
function expectOneErrorLine(r: Result, code: number, re: RegExp): string {
  expectNoStack(r);
  const lines = nonEmptyLines(r.stderr);
  expect(lines, `stderr:\n${r.stderr}`).toHaveLength(1);
  expect(lines[0]).toMatch(/^patchflow: /);
  expect(lines[0]).toMatch(re);
  expect(r.status, `stderr:\n${r.stderr}`).toBe(code);
  return lines[0]!;
}

/** Training logs progress on stderr (start line, evals); the error must still be one line, the last. */
function expectTrainingErrorLine(r: Result, code: number, re: RegExp): string {
  expectNoStack(r);
  const progress = /^(patchflow: (resuming at step \d+, )?[\d.]+[kM] parameters, |step \d+: validation loss |\S+ +step \d+\/\d+ )/;
  const errors = nonEmptyLines(r.stderr).filter((l) => !progress.test(l));
  expect(errors, `stderr:\n${r.stderr}`).toHaveLength(1);
  expect(errors[0]).toMatch(/^patchflow: /);
  expect(errors[0]).toMatch(re);
  expect(nonEmptyLines(r.stderr).at(-1)).toBe(errors[0]);
  expect(r.status, `stderr:\n${r.stderr}`).toBe(code);
  return errors[0]!;
}

function expectOk(r: Result): void {
  expectNoStack(r);
  expect(r.status, `stderr:\n${r.stderr}`).toBe(0);
}

/** sha256 of every file below `dir`, by relative path. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else out[r] = crypto.createHash('sha256').update(fs.readFileSync(path.join(dir, r))).digest('hex');
    }
  };
  walk('');
  return out;
}

type Metric = { type: string; step: number; loss?: number; valLoss?: number };
function readMetrics(dir: string): Metric[] {
  return nonEmptyLines(fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')).map((l) => JSON.parse(l) as Metric);
}
const trainLosses = (dir: string) => readMetrics(dir).filter((m) => m.type === 'train');
const stateStep = (dir: string) => (JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint', 'state.json'), 'utf8')) as { step: number }).step;

/** Points of the train series' polyline(s) in loss.svg. */
function svgTrainPoints(dir: string): number {
  const svg = fs.readFileSync(path.join(dir, 'loss.svg'), 'utf8');
  const group = /<g class="series" data-name="train">([\s\S]*?)<\/g>/.exec(svg);
  if (!group) return 0;
  return [...group[1]!.matchAll(/points="([^"]*)"/g)].reduce((n, m) => n + m[1]!.trim().split(/\s+/).length, 0);
}

function copyRun(from: string, to: string): string {
  fs.cpSync(from, to, { recursive: true });
  return to;
}

/** `validation loss X nats/byte, perplexity Y` from `patchflow eval`. */
function parseEval(stdout: string): { loss: number; ppl: number; step: number } {
  const m = /^validation loss ([\d.]+) nats\/byte, perplexity ([\d.]+|Infinity), .*step (\d+)\)$/.exec(stdout.trim());
  expect(m, `eval stdout: ${stdout}`).not.toBeNull();
  return { loss: Number(m![1]), ppl: Number(m![2]), step: Number(m![3]) };
}


/** file: URL of @patchflow/tensor's ESM entry, resolved the way node resolves it from the repo. */
function tensorEntryUrl(): string {
  // require.resolve cannot be used: the package only exports an "import" condition.
  const dir = fs.realpathSync(path.join(REPO, 'node_modules', '@patchflow', 'tensor'));
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { exports?: { '.'?: { import?: string } }; main?: string };
  const entry = path.join(dir, pkg.exports?.['.']?.import ?? pkg.main ?? 'dist/index.js');
  if (!fs.existsSync(entry)) throw new Error(`${entry} is missing: build the packages first`);
  return pathToFileURL(entry).href;
}

/** Writes a third-party backend module that registers `plugin` (JS source of a BackendPlugin object). */
function backendModule(file: string, plugin: string): string {
  fs.writeFileSync(file, `import { registerBackend } from ${JSON.stringify(tensorEntryUrl())};\nregisterBackend(${plugin});\n`);
  return file;
}

let base = ''; // a finished 6-step run: the happy path, and the source of every checkpoint case
let baseTrain: Result;

beforeAll(async () => {
  if (!fs.existsSync(path.join(CLI_DIR, 'dist', 'index.js'))) throw new Error('packages/cli/dist is missing: build first (npx nx run-many -t build)');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'patchflow-e2e-'));
  corpus = p('corpus.txt');
  fs.writeFileSync(corpus, wordCorpus());
  base = p('base');
  baseTrain = await cli(['train', '--data', corpus, '--out', base, ...TINY, '--steps', String(STEPS)]);
}, 60_000);

afterAll(() => {
  if (tmp && !process.env.PATCHFLOW_E2E_KEEP) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('happy path', () => {
  it('train writes a checkpoint, metrics.jsonl, loss.svg and a summary', () => {
    expectOk(baseTrain);
    for (const f of ['model.safetensors', 'optimizer.safetensors', 'state.json']) expect(fs.existsSync(path.join(base, 'checkpoint', f)), f).toBe(true);
    expect(stateStep(base)).toBe(STEPS);

    const metrics = readMetrics(base);
    const train = metrics.filter((m) => m.type === 'train');
    expect(train.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const m of train) {
      expect(Number.isFinite(m.loss)).toBe(true);
      expect(m.loss!).toBeGreaterThan(0);
    }
    // a byte-level model starts near ln(256) and learns something in 6 steps
    expect(train[0]!.loss!).toBeGreaterThan(5);
    expect(train[0]!.loss!).toBeLessThan(6);
    expect(train.at(-1)!.loss!).toBeLessThan(train[0]!.loss!);
    const evals = metrics.filter((m) => m.type === 'eval');
    expect(evals.map((m) => m.step)).toEqual([STEPS]);

    const svg = fs.readFileSync(path.join(base, 'loss.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svgTrainPoints(base)).toBe(STEPS);

    const lines = nonEmptyLines(baseTrain.stdout);
    expect(lines).toHaveLength(1);
    const s = lines[0]!;
    expect(s).toMatch(/^Trained a 1-layer, d=32 GPT \([\d.]+k parameters\) for 6 steps over 1 phase\(s\) on cpu: 384 tokens, /);
    expect(s).toContain(`Training loss went from ${train[0]!.loss!.toFixed(3)} to ${train.at(-1)!.loss!.toFixed(3)};`);
    expect(s).toContain(`final validation loss ${evals[0]!.valLoss!.toFixed(4)} nats/byte (perplexity ${Math.exp(evals[0]!.valLoss!).toFixed(2)}`);
    expect(s).toContain(`are in ${base}.`);
  });

  it('eval prints the validation loss and perplexity = exp(loss)', async () => {
    const before = snapshot(base);
    const r = await cli(['eval', '--checkpoint', base]);
    expectOk(r);
    const e = parseEval(r.stdout);
    expect(e.step).toBe(STEPS);
    // same weights, same validation windows as the final evaluation of the run
    const final = readMetrics(base).filter((m) => m.type === 'eval').at(-1)!.valLoss!;
    expect(e.loss).toBeCloseTo(final, 4);
    // perplexity is printed with 3 decimals, the loss with 4: exp(loss ± 5e-5)
    expect(Math.abs(e.ppl - Math.exp(e.loss))).toBeLessThanOrEqual(e.ppl * 5.1e-5 + 5e-4);
    // also through the checkpoint folder itself
    const r2 = await cli(['eval', '--checkpoint', path.join(base, 'checkpoint')]);
    expectOk(r2);
    expect(parseEval(r2.stdout).loss).toBe(e.loss);
    expect(snapshot(base)).toEqual(before); // eval only reads
  });

  it('generate continues the prompt, reproducibly for a seed', async () => {
    const args = ['generate', '--checkpoint', base, '--prompt', 'The', '--max-tokens', '20', '--seed', '7'];
    const [a, b] = await Promise.all([cli(args), cli(args)]);
    expectOk(a);
    expect(a.stdout.startsWith('The')).toBe(true);
    expect(a.stdout.length).toBeGreaterThan('The'.length + 1);
    expect(b.stdout).toBe(a.stdout);
  });

  it('backends lists cpu and tfjs-cpu as available, webgpu with yes or a reason', async () => {
    const r = await cli(['backends']);
    expectOk(r);
    // nothing of Dawn's or the Vulkan driver's own logging reaches the terminal
    expect(r.stderr).toBe('');
    const rows = nonEmptyLines(r.stdout).map((l) => l.split(/\s{2,}/));
    const row = (name: string) => rows.find((cells) => cells[0] === name);
    expect(rows[0]).toEqual(['backend', 'available', 'device', 'details']);
    expect(row('cpu')?.[1]).toBe('yes');
    expect(row('tfjs-cpu')?.[1]).toBe('yes');
    const webgpu = row('webgpu');
    expect(webgpu).toBeDefined();
    expect(['yes', 'no']).toContain(webgpu![1]);
    expect((webgpu![3] ?? '').length).toBeGreaterThan(10); // the description, or why it cannot run
  });
});

describe.concurrent('data errors', () => {
  const dataCase = async (data: string, re: RegExp) => {
    const out = p(`out-data-${path.basename(data)}`);
    const r = await cli(['train', '--data', data, '--out', out, ...TINY, '--steps', '2', '--quiet']);
    expectOneErrorLine(r, 2, re);
    expect(fs.existsSync(path.join(out, 'checkpoint'))).toBe(false);
  };

  it('missing corpus path', () => dataCase(p('no-such-corpus.txt'), /^patchflow: corpus path not found: .*no-such-corpus\.txt$/));

  it('a missing or unsupported tokenizer file: one line, exit 2', async () => {
    const missing = await cli(['train', '--data', corpus, '--tokenizer', p('missing-tokenizer.json'), '--out', p('out-tok-missing'), ...TINY, '--steps', '2', '--quiet']);
    expectOneErrorLine(missing, 2, /^patchflow: tokenizer file not found: .*missing-tokenizer\.json$/);
    fs.writeFileSync(p('unigram.json'), JSON.stringify({ model: { type: 'Unigram', vocab: [] } }));
    const unsupported = await cli(['train', '--data', corpus, '--tokenizer', p('unigram.json'), '--out', p('out-tok-unigram'), ...TINY, '--steps', '2', '--quiet']);
    expectOneErrorLine(unsupported, 2, /unsupported model\.type "Unigram" \(supported: BPE, WordLevel\)$/);
  });

  it('empty corpus file', async () => {
    fs.writeFileSync(p('empty.txt'), '');
    await dataCase(p('empty.txt'), /corpus .*empty\.txt is empty/);
  });

  it('corpus shorter than one training sequence', async () => {
    fs.writeFileSync(p('short.txt'), 'Call me Ishmael.');
    await dataCase(p('short.txt'), /split has \d+ tokens but at least 17 are needed .*seqLen/);
  });

  it('directory without .txt files', async () => {
    fs.mkdirSync(p('notxt'));
    fs.writeFileSync(p('notxt', 'readme.md'), 'not a corpus');
    await dataCase(p('notxt'), /no \.txt files in directory .*notxt$/);
  });

  it('JSONL line without a text field', async () => {
    fs.writeFileSync(p('docs.jsonl'), '{"text": "a first document"}\n\n{"body": "no text here"}\n');
    await dataCase(p('docs.jsonl'), /docs\.jsonl: line 3 has no string "text" field$/);
  });
});

describe.concurrent('config errors', () => {
  const configCase = async (args: string[], re: RegExp) => {
    const out = p(`out-config-${crypto.randomUUID()}`);
    const r = await cli(['train', '--data', corpus, '--out', out, ...TINY, '--steps', '2', '--quiet', ...args]);
    expectOneErrorLine(r, 2, re);
    expect(fs.existsSync(out)).toBe(false);
  };

  it('--lr 0', () => configCase(['--lr', '0'], /invalid config: optim\.lr must be > 0, got 0$/));
  it('--lr -1', () => configCase(['--lr', '-1'], /invalid config: optim\.lr must be > 0, got -1$/));
  it('heads not dividing the width', () => configCase(['--heads', '3'], /model\.nHead \(3\) must divide model\.dModel \(32\)/));

  it('unknown key in a config file', async () => {
    fs.writeFileSync(p('unknown-key.json'), JSON.stringify({ model: { nLayer: 1 }, optim: { learningRate: 0.01 } }));
    await configCase(['--config', p('unknown-key.json')], /unknown key "optim\.learningRate" \(known: lr, /);
  });

  it('config file that is not JSON (still one line)', async () => {
    fs.writeFileSync(p('not-json.json'), '{\n  "steps": 10,\n  oops\n}\n');
    await configCase(['--config', p('not-json.json')], /config file .*not-json\.json is not valid JSON/);
  });

  it('missing config file', () => configCase(['--config', p('nope.json')], /config file not found: .*nope\.json$/));

  it('unknown flag suggests the close one', () => configCase(['--step', '5'], /unknown flag '--step' for 'patchflow train'; did you mean '--steps'\?$/));

  it('non-integer --steps', () => configCase(['--steps', '1.5'], /--steps expects an integer, got '1\.5'$/));
});

describe.concurrent('backends', () => {
  it('unknown backend', async () => {
    const r = await cli(['train', '--data', corpus, '--out', p('out-nope'), ...TINY, '--steps', '2', '--backend', 'nope']);
    const line = expectOneErrorLine(r, 2, /unknown backend "nope" \(known: [a-z, -]+\)$/);
    const known = /\(known: ([^)]*)\)/.exec(line)![1]!.split(', ');
    for (const b of ['cpu', 'tfjs-cpu', 'webgpu', 'rdu-sim']) expect(known).toContain(b);
    expect(fs.existsSync(p('out-nope'))).toBe(false);
  });

  it('a third-party backend that is unavailable says why', async () => {
    const mod = backendModule(
      p('acme-npu.mjs'),
      `{ name: 'acme-npu', description: 'Acme NPU', tfjsName: 'acme-npu',
         async checkAvailability() { return { ok: false, reason: 'no Acme NPU found (libacme.so is not installed)' }; },
         async setup() { throw new Error('setup must not run when unavailable'); },
         capabilities() { return { device: 'simulated', maxRank: 4, fusedOps: [] }; } }`,
    );
    // a path relative to the current directory (the CLI runs in tmp)
    const env = { PATCHFLOW_BACKEND_MODULES: `./${path.basename(mod)}` };
    const list = await cli(['backends'], env);
    expectOk(list);
    const row = nonEmptyLines(list.stdout).map((l) => l.split(/\s{2,}/)).find((c) => c[0] === 'acme-npu');
    expect(row).toEqual(['acme-npu', 'no', 'simulated', 'no Acme NPU found (libacme.so is not installed)']);

    const r = await cli(['train', '--data', corpus, '--out', p('out-acme-npu'), ...TINY, '--steps', '2', '--backend', 'acme-npu'], env);
    expectOneErrorLine(r, 2, /^patchflow: backend "acme-npu" is not available: no Acme NPU found \(libacme\.so is not installed\)$/);
    expect(fs.existsSync(p('out-acme-npu'))).toBe(false);
  });

  it('a third-party backend registers without touching our code and trains', async () => {
    const mod = backendModule(
      p('acme-cpu.mjs'),
      `{ name: 'acme-cpu', description: 'Acme cpu: stock tfjs cpu under another name', tfjsName: 'cpu',
         async checkAvailability() { return { ok: true }; },
         async setup() {},
         capabilities() { return { device: 'cpu', maxRank: 6, fusedOps: [] }; } }`,
    );
    const env = { PATCHFLOW_BACKEND_MODULES: mod };
    const list = await cli(['backends'], env);
    expectOk(list);
    const row = nonEmptyLines(list.stdout).map((l) => l.split(/\s{2,}/)).find((c) => c[0] === 'acme-cpu');
    expect(row).toEqual(['acme-cpu', 'yes', 'cpu', 'Acme cpu: stock tfjs cpu under another name']);

    const out = p('out-acme-cpu');
    const r = await cli(['train', '--data', corpus, '--out', out, ...TINY, '--steps', String(STEPS), '--backend', 'acme-cpu'], env);
    expectOk(r);
    expect(r.stdout).toMatch(/ for 6 steps over 1 phase\(s\) on acme-cpu: /);
    expect(stateStep(out)).toBe(STEPS);
    // the same math as the default backend, up to float rounding of different kernels
    const mine = trainLosses(out).map((m) => m.loss!);
    const ref = trainLosses(base).map((m) => m.loss!);
    expect(mine).toHaveLength(STEPS);
    mine.forEach((l, i) => expect(Math.abs(l - ref[i]!) / ref[i]!).toBeLessThan(1e-3));
  });

  // CI runs this file once more with the Vulkan loader hidden (.ci/without-vulkan), as on a fresh
  // machine that never installed one.
  it.runIf(process.env.PATCHFLOW_EXPECT_NO_VULKAN === '1')('without a Vulkan loader: a clean reason in backends and in --backend webgpu', async () => {
    const list = await cli(['backends']);
    expectOk(list);
    expect(list.stderr).toBe('');
    const row = nonEmptyLines(list.stdout).map((l) => l.split(/\s{2,}/)).find((c) => c[0] === 'webgpu');
    expect(row?.slice(0, 3)).toEqual(['webgpu', 'no', 'gpu']);
    expect(row![3]).toMatch(/^no Vulkan loader \(libvulkan\.so\.1 not found\); install a Vulkan driver: .*lavapipe/);
    const r = await cli(['train', '--data', corpus, '--out', p('out-no-vulkan'), ...TINY, '--steps', '2', '--backend', 'webgpu']);
    expectOneErrorLine(r, 2, /^patchflow: backend "webgpu" is not available: no Vulkan loader \(libvulkan\.so\.1 not found\); install a Vulkan driver/);
    expect(fs.existsSync(p('out-no-vulkan'))).toBe(false);
  });

  it('a backend module that cannot be loaded', async () => {
    const r = await cli(['backends'], { PATCHFLOW_BACKEND_MODULES: p('missing-backend.mjs') });
    expectOneErrorLine(r, 2, /^patchflow: cannot load backend module ".*missing-backend\.mjs" \(from PATCHFLOW_BACKEND_MODULES\): /);
  });
});

describe('checkpoint errors', () => {
  it('eval on a directory without a checkpoint', async () => {
    fs.mkdirSync(p('no-ckpt'));
    const r = await cli(['eval', '--checkpoint', p('no-ckpt')]);
    expectOneErrorLine(r, 2, /no checkpoint in .*no-ckpt \(expected .*checkpoint\/ with state\.json and model\.safetensors\)$/);
    const r2 = await cli(['generate', '--checkpoint', p('does-not-exist')]);
    expectOneErrorLine(r2, 2, /no checkpoint at .*does-not-exist: the directory does not exist$/);
    const r3 = await cli(['eval']);
    expectOneErrorLine(r3, 2, /^patchflow: --checkpoint DIR is required$/);
  });

  it('a truncated model.safetensors', async () => {
    const dir = copyRun(base, p('truncated'));
    const file = path.join(dir, 'checkpoint', 'model.safetensors');
    fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
    const before = snapshot(dir);
    const ev = await cli(['eval', '--checkpoint', dir]);
    expectOneErrorLine(ev, 2, /model\.safetensors: .*the file is truncated or corrupt$/);
    const gen = await cli(['generate', '--checkpoint', dir, '--prompt', 'The']);
    expectOneErrorLine(gen, 2, /model\.safetensors: .*the file is truncated or corrupt$/);
    const res = await cli(['train', '--out', dir, '--resume', '--quiet']);
    expectOneErrorLine(res, 2, /model\.safetensors: .*the file is truncated or corrupt$/);
    expect(snapshot(dir)).toEqual(before);
    fs.truncateSync(file, 5);
    expectOneErrorLine(await cli(['eval', '--checkpoint', dir]), 2, /truncated safetensors file \(5 bytes/);
  });

  it('a corrupt state.json', async () => {
    const dir = copyRun(base, p('corrupt-state'));
    const state = path.join(dir, 'checkpoint', 'state.json');
    // pretty-printed JSON with garbage inside: the parser's message quotes lines of it
    fs.writeFileSync(state, fs.readFileSync(state, 'utf8').replace('"step":', '"step": garbage,\n  "x":'));
    let before = snapshot(dir);
    expectOneErrorLine(await cli(['eval', '--checkpoint', dir]), 2, /state\.json: not valid JSON/);
    expectOneErrorLine(await cli(['train', '--out', dir, '--resume', '--quiet']), 2, /state\.json: not valid JSON/);
    expect(snapshot(dir)).toEqual(before);
    fs.writeFileSync(state, '{"format": "patchflow-checkpoint/1", "config": {');
    before = snapshot(dir);
    expectOneErrorLine(await cli(['generate', '--checkpoint', dir]), 2, /state\.json: not valid JSON/);
    expect(snapshot(dir)).toEqual(before);
  });

  it('a state.json that is JSON but not a patchflow state: eval', async () => {
    const dir = copyRun(base, p('foreign-state-eval'));
    fs.writeFileSync(path.join(dir, 'checkpoint', 'state.json'), '{"config": {}, "step": 3}\n');
    expectOneErrorLine(await cli(['eval', '--checkpoint', dir]), 2, /state\.json holds no training config; is it a patchflow training checkpoint\?$/);
  });

  // BUG (trainer): train() trusts the checkpoint's config on resume without validating it
  // (packages/trainer/src/trainer.ts:148), so a state.json without config.model crashes in
  // finalizeModelConfig: "patchflow: internal error: Cannot read properties of undefined (reading 'vocabSize')", exit 1.
  it('a state.json that is JSON but not a patchflow state: train --resume', async () => {
    const dir = copyRun(base, p('foreign-state-resume'));
    fs.writeFileSync(path.join(dir, 'checkpoint', 'state.json'), '{"config": {}, "step": 3}\n');
    const before = snapshot(dir);
    expectOneErrorLine(await cli(['train', '--out', dir, '--resume', '--quiet']), 2, /state\.json/);
    expect(snapshot(dir)).toEqual(before);
  });

  it('weights of another run (and model shape)', async () => {
    const other = p('d48');
    expectOk(await cli(['train', '--data', corpus, '--out', other, '--layers', '1', '--d-model', '48', '--heads', '2', '--seq-len', '16', '--batch-size', '4', '--steps', '1', '--quiet']));
    const dir = copyRun(base, p('mixed-shapes'));
    fs.copyFileSync(path.join(other, 'checkpoint', 'model.safetensors'), path.join(dir, 'checkpoint', 'model.safetensors'));
    const before = snapshot(dir);
    // every file of a save carries its checkpoint id: files of two runs are caught before their shapes are compared
    const shape = /mixed-shapes\/checkpoint: model\.safetensors \(checkpoint [\w-]+\) and state\.json \(checkpoint [\w-]+\) come from different saves$/;
    expectOneErrorLine(await cli(['eval', '--checkpoint', dir]), 2, shape);
    expectOneErrorLine(await cli(['generate', '--checkpoint', dir]), 2, shape);
    expectOneErrorLine(await cli(['train', '--out', dir, '--resume', '--quiet']), 2, shape);
    expect(snapshot(dir)).toEqual(before);
  });

  it('train into a run that already has a checkpoint refuses and keeps it byte-identical', async () => {
    const dir = copyRun(base, p('existing'));
    const before = snapshot(dir);
    expect(Object.keys(before).sort()).toEqual(['checkpoint/model.safetensors', 'checkpoint/optimizer.safetensors', 'checkpoint/state.json', 'loss.svg', 'metrics.jsonl']);
    const r = await cli(['train', '--data', corpus, '--out', dir, ...TINY, '--steps', '3']);
    expectOneErrorLine(r, 2, /already holds a checkpoint: pass --resume to continue it, or --out to start a new run elsewhere$/);
    expect(snapshot(dir)).toEqual(before);
    const r2 = await cli(['train', '--out', p('nothing-here'), '--resume']);
    expectOneErrorLine(r2, 2, /^patchflow: --resume: no checkpoint in .*nothing-here$/);
  });
});

describe.concurrent('divergence', () => {
  const check = async (name: string, args: string[]) => {
    const out = p(name);
    const r = await cli(['train', '--data', corpus, '--out', out, ...TINY, '--steps', '20', '--checkpoint-every', '1', '--quiet', ...args]);
    const line = expectTrainingErrorLine(r, 3, /^patchflow: training diverged at step (\d+): .*; the last good checkpoint \(step (\d+)\) is kept in /);
    const [, diverged, kept] = /step (\d+):.*\(step (\d+)\)/.exec(line)!.map(Number) as [number, number, number];
    expect(diverged).toBeGreaterThan(1);
    expect(diverged).toBeLessThan(20);
    const step = stateStep(out);
    expect(step).toBe(kept);
    expect(step).toBeLessThan(diverged);
    // metrics of the steps before the divergence are kept, and nothing after it
    expect(trainLosses(out).map((m) => m.step)).toEqual(Array.from({ length: diverged - 1 }, (_, i) => i + 1));
    const ev = await cli(['eval', '--checkpoint', out]);
    expectOk(ev);
    expect(ev.stdout).toMatch(new RegExp(`, step ${step}\\)$`, 'm'));
  };

  it('--lr 1e6 stops with exit code 3 and keeps the last good checkpoint', () => check('diverge-flag', ['--lr', '1e6']));

  it('a config with a huge lr and gradClip 0', async () => {
    fs.writeFileSync(p('huge-lr.json'), JSON.stringify({ optim: { lr: 1e6, gradClip: 0, warmupSteps: 0 } }));
    await check('diverge-config', ['--config', p('huge-lr.json')]);
  });
});

describe('interruption and resume', () => {
  const RUN = ['--data', '', ...TINY, '--steps', '30', '--eval-every', '10', '--checkpoint-every', '5'];
  const runArgs = (out: string) => ['train', ...RUN.map((a) => (a === '' ? corpus : a)), '--out', out];
  let reference: Promise<Result>;
  const refDir = () => p('resume-reference');

  beforeAll(() => {
    // the uninterrupted run everything below is compared with (runs while the others start)
    reference = cli([...runArgs(refDir()), '--quiet']);
  });

  async function compareWithReference(dir: string, resumedAt: number, resumed: Result): Promise<void> {
    expectOk(await reference);
    expectOk(resumed);
    expect(resumed.stderr).toMatch(new RegExp(`^patchflow: resuming at step ${resumedAt}, `, 'm'));
    const ref = readMetrics(refDir());
    const got = readMetrics(dir);
    // every step once, every evaluation once, in order
    expect(got.map((m) => `${m.type}@${m.step}`)).toEqual(ref.map((m) => `${m.type}@${m.step}`));
    got.forEach((m, i) => {
      const a = m.loss ?? m.valLoss!;
      const b = ref[i]!.loss ?? ref[i]!.valLoss!;
      expect(Math.abs(a - b) / Math.abs(b), `${m.type} loss at step ${m.step}`).toBeLessThanOrEqual(1e-6);
    });
    expect(stateStep(dir)).toBe(30);
    // the plot and the summary cover the whole run, not just the part after the resume
    expect(svgTrainPoints(dir)).toBe(30);
    const firstLoss = ref.find((m) => m.type === 'train')!.loss!;
    expect(resumed.stdout).toContain(`Training loss went from ${firstLoss.toFixed(3)} to `);
    expect(resumed.stdout).toMatch(/ for 30 steps over 1 phase\(s\) on cpu: 1,920 tokens, /);
  }

  /** Starts a run and calls `act` once metrics.jsonl holds `lines` training records. */
  async function interruptAfter(out: string, lines: number, act: (c: ChildProcess) => void): Promise<Result> {
    const { child, done } = start(runArgs(out));
    let fired = false;
    const timer = setInterval(() => {
      let n = 0;
      try {
        n = nonEmptyLines(fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')).filter((l) => l.includes('"type":"train"')).length;
      } catch {
        return;
      }
      if (n >= lines && !fired) {
        fired = true;
        act(child);
      }
    }, 5);
    try {
      return await done;
    } finally {
      clearInterval(timer);
    }
  }

  // BUG (trainer): the step loop of train() never yields to the event loop (on the cpu backends
  // every await is an already-resolved promise), so the CLI's SIGINT handler, and any AbortSignal
  // aborted from a timer or I/O callback, only runs after training has finished: Ctrl-C is ignored
  // and the run completes with exit code 0. Remove `.fails` once trainer.ts yields each step.
  it('SIGINT saves a checkpoint, exits 130, and --resume finishes the run exactly', async () => {
    const dir = p('sigint');
    const r = await interruptAfter(dir, 1, (c) => c.kill('SIGINT'));
    expectNoStack(r);
    expect(r.status, `stderr:\n${r.stderr}`).toBe(130);
    const last = nonEmptyLines(r.stderr).at(-1)!;
    const m = /^patchflow: stopped at step (\d+); checkpoint saved in (.*)\. Continue with: patchflow train --out (.*) --resume$/.exec(last);
    expect(m, last).not.toBeNull();
    const stopped = Number(m![1]);
    expect(stopped).toBeGreaterThanOrEqual(1);
    expect(stopped).toBeLessThan(30);
    expect(stateStep(dir)).toBe(stopped);
    expect(trainLosses(dir)).toHaveLength(stopped);
    const resumed = await cli(['train', '--out', dir, '--resume', '--quiet']);
    await compareWithReference(dir, stopped, resumed);
  }, 90_000);

  it('a killed run resumes from its last checkpoint and matches an uninterrupted run', async () => {
    const dir = p('killed');
    const r = await interruptAfter(dir, 12, (c) => c.kill('SIGKILL'));
    expect(r.signal, `the run was not killed: status ${r.status}, stderr:\n${r.stderr}`).toBe('SIGKILL');
    const saved = stateStep(dir);
    expect(saved % 5).toBe(0);
    expect(saved).toBeGreaterThanOrEqual(10);
    expect(saved).toBeLessThan(30);
    expect(trainLosses(dir).length).toBeGreaterThanOrEqual(saved);
    const resumed = await cli(['train', '--out', dir, '--resume', '--quiet']);
    // the killed run's lock is stale: taken over with a one-line notice
    expect(resumed.stderr).toMatch(new RegExp(`^patchflow: took over the stale lock on .*killed of pid ${r.pid} \\(started \\d\\d:\\d\\d:\\d\\d\\), whose process is gone$`, 'm'));
    await compareWithReference(dir, saved, resumed);
  }, 90_000);
});

describe('the run directory under stress', () => {
  const LONG = ['--data', '', ...TINY, '--steps', '400', '--eval-every', '0', '--checkpoint-every', '5'];
  const longArgs = (out: string) => ['train', ...LONG.map((a) => (a === '' ? corpus : a)), '--out', out, '--quiet'];
  const exists = (f: string) => fs.existsSync(f);
  async function waitFor(cond: () => boolean, what: string, ms = 30_000): Promise<void> {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  it('a second writer exits 2 naming the first; the first finishes with a clean, monotone metrics.jsonl', async () => {
    const dir = p('two-writers');
    const first = start(longArgs(dir));
    await waitFor(() => exists(path.join(dir, 'checkpoint', 'state.json')), 'the first checkpoint');
    const second = await cli(['train', '--out', dir, '--resume', '--quiet']);
    expectOneErrorLine(second, 2, new RegExp(`^patchflow: ${dir.replace(/[.]/g, '\\.')} is in use by patchflow train pid ${first.child.pid} \\(started \\d\\d:\\d\\d:\\d\\d\\); wait for it or pass another --out$`));
    // a fresh (not --resume) run is told the same, not "already holds a checkpoint"
    const third = await cli(['train', '--out', dir, '--quiet', ...TINY, '--data', corpus]);
    expectOneErrorLine(third, 2, / is in use by patchflow train pid \d+ /);
    const r = await first.done;
    expectOk(r);
    const steps = readMetrics(dir).filter((m) => m.type === 'train').map((m) => m.step);
    expect(steps).toEqual(Array.from({ length: 400 }, (_, i) => i + 1));
    expect(exists(path.join(dir, '.patchflow.lock'))).toBe(false);
  }, 120_000);

  it('eval during a run reads a complete checkpoint every time', async () => {
    const dir = p('eval-during-run');
    const run = start(longArgs(dir));
    await waitFor(() => exists(path.join(dir, 'checkpoint', 'state.json')), 'the first checkpoint');
    let evals = 0;
    let finished = false;
    void run.done.then(() => (finished = true));
    while (!finished && evals < 8) {
      const e = await cli(['eval', '--checkpoint', dir]);
      expectOk(e);
      expect(parseEval(e.stdout).step % 5).toBe(0);
      evals++;
    }
    expectOk(await run.done);
    expect(evals).toBeGreaterThan(0);
  }, 120_000);

  // A real full disk: a small tmpfs in a private mount namespace (root and util-linux's unshare, as in CI).
  const canMount = process.platform === 'linux' && process.getuid?.() === 0 && spawnSync('unshare', ['--mount', 'true']).status === 0;
  /** Runs the CLI with its run directory on a tmpfs of `size`; afterwards a copy of that directory is at `copy`. */
  function onTmpfs(name: string, size: string, copy: string): Promise<Result> {
    const mnt = p(name);
    fs.mkdirSync(mnt);
    const script = `mount -t tmpfs -o size=${size} tmpfs ${mnt} && ${process.execPath} ${BIN} ${longArgs(path.join(mnt, 'run')).map((a) => `'${a}'`).join(' ')}`;
    return new Promise<Result>((resolve, reject) => {
      const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `${script}; s=$?; cp -r ${mnt}/run ${copy} 2>/dev/null; exit $s`], { cwd: tmp, env: cliEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', reject);
      child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr, pid: child.pid }));
    });
  }

  it.skipIf(!canMount)('a disk too small for one checkpoint is reported before step 1', async () => {
    const r = await onTmpfs('tmpfs-tiny', '64k', p('tmpfs-tiny-copy'));
    expectTrainingErrorLine(r, 4, /^patchflow: .*tmpfs-tiny\/run has 0\.\d MiB free but a checkpoint of this model needs about 0\.\d MiB \(weights and optimizer state\); free some space or use another output directory$/);
    expect(fs.existsSync(path.join(p('tmpfs-tiny-copy'), 'metrics.jsonl'))).toBe(false);
  });

  it.skipIf(!canMount)('a full disk ends the run with one line naming the file, the reason and the intact checkpoint (exit 4)', async () => {
    // room for one checkpoint of the tiny model (about 0.26 MB) but not for a second beside it
    const r = await onTmpfs('tmpfs', '480k', p('tmpfs-copy'));
    const line = expectTrainingErrorLine(r, 4, /^patchflow: could not write the checkpoint of step (\d+) \(.*\): no space left on device \(ENOSPC\); the checkpoint of step (\d+) in .*checkpoint is intact$/);
    const [, failed, intact] = /step (\d+) .* step (\d+) /.exec(line)!;
    expect(Number(intact)).toBe(Number(failed) - 5);
    // the copy taken after the run ended holds the intact checkpoint, loadable by eval
    expect(stateStep(p('tmpfs-copy'))).toBe(Number(intact));
    expectOk(await cli(['eval', '--checkpoint', p('tmpfs-copy')]));
  }, 120_000);
});
