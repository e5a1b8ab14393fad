/**
 * `patchflow train --patch-size/--patch-fraction` end to end: spawns the real CLI (bin/patchflow.js
 * over dist/: build first) on a tiny model and corpus; the result must be an ordinary checkpoint
 * that `eval` and `generate` read without knowing about patches.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runCliSync, tempDir, whaleText } from '@patchflow/test-fixtures';

vi.setConfig({ testTimeout: 60_000 });

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'patchflow.js');
const TINY = ['--layers', '1', '--d-model', '32', '--heads', '2', '--seq-len', '16', '--batch-size', '4', '--eval-every', '0', '--quiet'];

let tmp = '';
let corpus = '';
const p = (...parts: string[]) => path.join(tmp, ...parts);

const cli = (args: string[]) => runCliSync(BIN, args, tmp);

beforeAll(() => {
  tmp = tempDir('pf-patch-cli-');
  corpus = p('corpus.txt');
  fs.writeFileSync(corpus, whaleText(600));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('patchflow train --patch-size', () => {
  it('trains a patch phase then a token phase, and eval/generate read the result', () => {
    // budget 16 steps × 4 × 16 = 1,024 tokens: patch 512 / (4 × 64) = 2 steps, token 512 / 64 = 8 steps
    const r = cli(['train', '--data', corpus, ...TINY, '--steps', '16', '--patch-size', '4', '--patch-fraction', '0.5', '--out', p('run')]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/for 10 steps over 2 phase\(s\)/);
    expect(r.stdout).toMatch(/plan: patch \(K=4\) 50% of tokens, 2 steps, .*; token 50% of tokens, 8 steps, .*optimizer reset; cost 0\.625× dense token-level/);
    const metrics = fs.readFileSync(p('run', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; phase?: string; step: number; valLoss?: number });
    expect(metrics.filter((m) => m.type === 'train').map((m) => m.phase)).toEqual([...Array(2).fill('patch'), ...Array(8).fill('token')]);
    const finalVal = metrics.find((m) => m.type === 'eval')!.valLoss!;

    const ev = cli(['eval', '--checkpoint', p('run')]);
    expect(ev.status).toBe(0);
    // the same held-out windows as the trainer's final evaluation: the same number
    expect(ev.stdout).toContain(`validation loss ${finalVal.toFixed(4)} nats/byte`);

    const gen = cli(['generate', '--checkpoint', p('run'), '--prompt', 'line 1', '--max-tokens', '20']);
    expect(gen.status).toBe(0);
    expect(gen.stdout.startsWith('line 1')).toBe(true);
  });

  it('progress names the phase that is running', () => {
    const args = ['train', '--data', corpus, ...TINY.filter((a) => a !== '--quiet'), '--steps', '16', '--patch-size', '4', '--patch-fraction', '0.5', '--out', p('run-progress')];
    const r = cli(args);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^plan: patch \(K=4\)/m);
    expect(r.stderr).toMatch(/phase 1: patch, 2 steps/);
    expect(r.stderr).toMatch(/phase 2: token, 8 steps/);
    expect(r.stderr).toMatch(/\bpatch\b.*step [12]\/10/);
    expect(r.stderr).toMatch(/\btoken\b.*step 10\/10/);
  });

  it('reads plugins.patch from a config file; flags override single keys', () => {
    fs.writeFileSync(p('cfg.json'), JSON.stringify({ plugins: { patch: { patchSize: 2, fraction: 0.75, optimizer: 'continue' } } }));
    const r = cli(['train', '--config', p('cfg.json'), '--data', corpus, ...TINY, '--steps', '16', '--patch-size', '4', '--out', p('run-cfg')]);
    expect(r.status).toBe(0);
    // 768 patch tokens / 256 = 3 steps; 256 token tokens / 64 = 4 steps
    expect(r.stdout).toMatch(/plan: patch \(K=4\) 75% of tokens, 3 steps, .*; token 25% of tokens, 4 steps, .*optimizer continue/);
  });

  it('--patch-fraction 0 is plain token-level training', () => {
    const r = cli(['train', '--data', corpus, ...TINY, '--steps', '4', '--patch-fraction', '0', '--out', p('run-zero')]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/for 4 steps over 1 phase\(s\)/);
    expect(r.stdout).not.toMatch(/plan:/);
  });

  it.each([
    [['--patch-size', '0'], /plugins\.patch\.patchSize \(--patch-size\) must be an integer >= 1, got 0/],
    [['--patch-size', '2.5'], /must be an integer >= 1, got 2\.5/],
    [['--patch-fraction', '1'], /plugins\.patch\.fraction \(--patch-fraction\) must be in \[0, 1\), got 1/],
    [['--patch-fraction', '-0.5'], /must be in \[0, 1\), got -0\.5/],
    [['--patch-optimizer', 'keep'], /must be "reset" or "continue", got "keep"/],
    [['--patch-size', '4', '--steps', '1', '--batch-size', '1', '--patch-fraction', '0.5'], /patch phase gets 8 tokens .* fewer than one patch sequence of K×seqLen = 64/],
  ])('rejects %j with one line and exit code 2, before training', (flags, msg) => {
    const out = p(`bad-${flags.join('_')}`);
    const r = cli(['train', '--data', corpus, ...TINY, '--steps', '8', ...flags, '--out', out]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(msg);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr.startsWith('patchflow: invalid config:')).toBe(true);
    expect(fs.existsSync(path.join(out, 'checkpoint'))).toBe(false);
    expect(fs.existsSync(path.join(out, 'metrics.jsonl'))).toBe(false);
  });
});
