/**
 * `patchflow export --format hf` / `patchflow import --format hf`: spawns the built CLI (bin over
 * dist/; build first). A trained run goes out and comes back with the same greedy generations, the
 * imported run evaluates and fine-tunes with `train --resume`; bad input is one line, exit 2.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'patchflow.js');
let tmp = '';
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pf-hfcli-'));
  fs.writeFileSync(path.join(tmp, 'corpus.txt'), 'Call me Ishmael. Some years ago, never mind how long precisely, having little money in my purse. '.repeat(40));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function cli(args: string[]) {
  const env = { ...process.env };
  delete env.PATCHFLOW_DEBUG;
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: tmp, env, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const TRAIN = ['train', '--data', 'corpus.txt', '--steps', '2', '--layers', '1', '--d-model', '16', '--heads', '2', '--seq-len', '16', '--batch-size', '2', '--eval-every', '0', '--quiet'];

describe('patchflow export / import --format hf', () => {
  it.each([
    ['learned positions, tied', 'gpt2', 'GPT2LMHeadModel', {}],
    ['rotary positions, untied', 'gpt_neox', 'GPTNeoXForCausalLM', { model: { positions: 'rotary', tiedEmbeddings: false } }],
  ] as const)('%s: exported as %s, imported back with the same greedy generation; the imported run evaluates and trains on', (name, arch, cls, cfg) => {
    const tag = arch;
    fs.writeFileSync(path.join(tmp, `${tag}.json`), JSON.stringify(cfg));
    const t = cli([...TRAIN, '--config', `${tag}.json`, '--out', `run-${tag}`]);
    expect(t.status).toBe(0);

    const ex = cli(['export', '--format', 'hf', '--checkpoint', `run-${tag}`, '--out', `hf-${tag}`]);
    expect(ex.stderr).toBe('');
    expect(ex.status).toBe(0);
    expect(ex.stdout).toMatch(new RegExp(`^wrote hf-${tag}: ${cls} \\(model_type ${arch}\\), [\\d,]+ parameters from step 2, byte-level tokenizer`));
    const config = JSON.parse(fs.readFileSync(path.join(tmp, `hf-${tag}`, 'config.json'), 'utf8'));
    expect(config.architectures).toEqual([cls]);

    fs.writeFileSync(path.join(tmp, 'ft.json'), JSON.stringify({ data: 'corpus.txt', steps: 2, batchSize: 2, evalEvery: 0, evalBatches: 1 }));
    const im = cli(['import', '--format', 'hf', '--from', `hf-${tag}`, '--out', `imported-${tag}`, '--config', 'ft.json']);
    expect(im.stderr).toBe('');
    expect(im.status).toBe(0);
    expect(im.stdout).toMatch(new RegExp(`^imported hf-${tag} \\(${arch}, F32\\) into imported-${tag}/checkpoint: `));

    const gen = (dir: string) => cli(['generate', '--checkpoint', dir, '--prompt', 'Call me', '--max-tokens', '24', '--temperature', '0']);
    const a = gen(`run-${tag}`);
    const b = gen(`imported-${tag}`);
    expect(a.status).toBe(0);
    expect(b.status).toBe(0);
    expect(b.stdout).toBe(a.stdout);

    const ev = cli(['eval', '--checkpoint', `imported-${tag}`, '--batches', '1']);
    expect(ev.status).toBe(0);
    expect(ev.stdout).toMatch(/^validation loss \d+\.\d+ nats\/byte.*step 0\)/);

    const ft = cli(['train', '--resume', '--out', `imported-${tag}`, '--quiet']);
    expect(ft.status).toBe(0);
    expect(ft.stderr).toMatch(/resuming at step 0/);
    expect(ft.stdout).toMatch(/for 2 steps/);
    void name;
  });

  it.each([
    [['export', '--checkpoint', 'x', '--out', 'y'], /--format hf is required/],
    [['export', '--format', 'onnx', '--checkpoint', 'x', '--out', 'y'], /unknown --format 'onnx' \(supported: hf\)/],
    [['export', '--format', 'hf', '--out', 'y'], /--checkpoint DIR is required/],
    [['export', '--format', 'hf', '--checkpoint', 'missing', '--out', 'y'], /no checkpoint at missing/],
    [['import', '--format', 'hf', '--out', 'r'], /--from DIR is required/],
    [['import', '--format', 'hf', '--from', 'missing', '--out', 'r'], /no Hugging Face model directory at missing/],
    [['import', '--format', 'hf', '--from', 'corpus.txt', '--out', 'r'], /no Hugging Face model directory/],
    [['import', '--format', 'hf', '--from', '.', '--out', 'r'], /has no config\.json/],
  ])('bad input %j: one line on stderr, exit 2', (args, re) => {
    const r = cli(args as string[]);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^patchflow: /);
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    expect(r.stderr).toMatch(re as RegExp);
    expect(r.status).toBe(2);
  });

  it('refuses an unsupported directory and a run directory that holds a checkpoint, in one line', () => {
    expect(cli([...TRAIN, '--out', 'run-x']).status).toBe(0);
    expect(cli(['export', '--format', 'hf', '--checkpoint', 'run-x', '--out', 'hf-x']).status).toBe(0);
    const bad = path.join(tmp, 'hf-x', 'config.json');
    const cfg = JSON.parse(fs.readFileSync(bad, 'utf8'));
    fs.writeFileSync(bad, JSON.stringify({ ...cfg, activation_function: 'relu' }));
    const r = cli(['import', '--format', 'hf', '--from', 'hf-x', '--out', 'imp-x']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^patchflow: hf-x\/config\.json: activation_function is "relu", patchflow's MLP uses GELU's tanh approximation .*; patchflow's model cannot represent it\n$/);
    fs.writeFileSync(bad, JSON.stringify(cfg));
    const twice = cli(['import', '--format', 'hf', '--from', 'hf-x', '--out', 'run-x']);
    expect(twice.status).toBe(2);
    expect(twice.stderr).toMatch(/^patchflow: run-x already holds a checkpoint; import into a new run directory\n$/);
  });
});
