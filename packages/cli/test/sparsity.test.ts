/**
 * `patchflow train --sparsity …` end to end: spawns the real CLI (bin/patchflow.js over dist/:
 * build first) on a tiny model and corpus. Checks the flags and config keys, composition with
 * --patch-size, that the result is an ordinary checkpoint, and that every bad input is one line on
 * stderr with exit code 2 before any training step.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runCliSync, tempDir, whaleText } from '@patchflow/test-fixtures';

vi.setConfig({ testTimeout: 60_000 });

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'patchflow.js');
const TINY = ['--layers', '2', '--d-model', '32', '--heads', '2', '--seq-len', '16', '--batch-size', '4', '--eval-every', '0', '--quiet'];

let tmp = '';
let corpus = '';
const p = (...parts: string[]) => path.join(tmp, ...parts);

const cli = (args: string[]) => runCliSync(BIN, args, tmp);

type Metric = { type: string; step: number; phase?: string; density?: number; nonzeroParams?: number; valLoss?: number; flops?: number };
const metrics = (dir: string) => fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Metric);

beforeAll(() => {
  tmp = tempDir('pf-sparsity-cli-');
  corpus = p('corpus.txt');
  fs.writeFileSync(corpus, whaleText(600));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('patchflow train --sparsity', () => {
  it('block-sparse training with patch-level training and a final dense phase; eval reads the result', () => {
    // budget 20 steps × 4 × 16 tokens: patch (K=2) on half, then token, then the last 10% dense
    const r = cli(['train', '--data', corpus, ...TINY, '--steps', '20', '--patch-size', '2', '--patch-fraction', '0.5', '--sparsity', '0.75', '--sparsity-pattern', 'block:16', '--dense-fraction', '0.1', '--out', p('run')]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/sparsity: static block:16, target 75\.0% zero, then dense on the last 10% of tokens/);
    expect(r.stdout).toMatch(/plan: patch \(K=2\) 50% of tokens, 5 steps, .*; token 40% of tokens, 8 steps, .*; dense 10% of tokens, 2 steps/);
    const m = metrics(p('run'));
    const train = m.filter((x) => x.type === 'train');
    expect(train.map((x) => x.phase)).toEqual([...Array(5).fill('patch'), ...Array(8).fill('token'), ...Array(2).fill('dense')]);
    expect(train.slice(0, 13).every((x) => x.density === 0.25)).toBe(true);
    expect(train.slice(13).every((x) => x.density === 1)).toBe(true);
    // sparse token steps cost fewer FLOPs than dense ones
    const delta = (i: number) => train[i]!.flops! - train[i - 1]!.flops!;
    expect(delta(10)).toBeLessThan(delta(14));
    const finalVal = m.find((x) => x.type === 'eval')!.valLoss!;
    const ev = cli(['eval', '--checkpoint', p('run')]);
    expect(ev.status).toBe(0);
    expect(ev.stdout).toContain(`validation loss ${finalVal.toFixed(4)} nats/byte`);
  });

  it('reads plugins.sparsity from a config file; flags override single keys', () => {
    const cfg = p('sparse.json');
    fs.writeFileSync(cfg, JSON.stringify({ plugins: { sparsity: { sparsity: 0.5, pattern: 'nm:2:4', distribution: 'uniform' } } }));
    const r = cli(['train', '--data', corpus, ...TINY, '--steps', '4', '--config', cfg, '--out', p('run-cfg')]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/sparsity: static nm:2:4/);
    const r2 = cli(['train', '--data', corpus, ...TINY, '--steps', '4', '--config', cfg, '--sparsity-pattern', 'unstructured', '--sparsity', '0.875', '--out', p('run-cfg2')]);
    expect(r2.status).toBe(0);
    expect(r2.stdout).toMatch(/sparsity: static unstructured, target 87\.5% zero/);
    expect(metrics(p('run-cfg2')).find((x) => x.type === 'train')!.density).toBeCloseTo(0.125, 3);
  });

  it.each([
    [['--sparsity', '1.2'], /plugins\.sparsity\.sparsity \(--sparsity\) must be a number in \[0, 1\), got 1\.2/],
    [['--sparsity', '-0.5'], /must be a number in \[0, 1\)/],
    [['--sparsity-pattern', 'nm:4:2'], /N \(4\) must not exceed M \(2\)/],
    [['--sparsity-pattern', 'block:24'], /block size 24 does not divide blocks\.0\.attn\.qkv\.weight's shape \[32, 96\]/],
    [['--sparsity-pattern', 'zigzag'], /unknown plugins\.sparsity\.pattern \(--sparsity-pattern\) "zigzag"/],
    [['--sparsity-mode', 'lottery'], /--sparsity-mode\) must be "static", "gmp" or "rigl"/],
    [['--sparsity-pattern', 'nm:2:4', '--sparsity-mode', 'rigl'], /must be "static" with an N:M pattern/],
    [['--dense-fraction', '1'], /--dense-fraction\) must be a number in \[0, 1\)/],
  ])('%j: one clear line, exit 2, nothing trained', (flags, msg) => {
    const out = p(`bad-${flags.join('_').replace(/[^\w.-]/g, '')}`);
    const r = cli(['train', '--data', corpus, ...TINY, '--steps', '4', ...flags, '--out', out]);
    expect(r.status).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(msg);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(fs.existsSync(path.join(out, 'checkpoint'))).toBe(false);
  });
});
