/** Corpora, tiny configs and temp directories for tests that train small models. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll } from 'vitest';

/** `lines` lines of patterned English-like text (~60 bytes each): learnable in a few steps, deterministic. */
export function whaleText(lines = 400): string {
  return Array.from({ length: lines }, (_, i) => `line ${i}: the whale swam ${i % 7} miles east and ${(i * 3) % 11} west.\n`).join('');
}

/** whaleText() as the trainer's `corpus` option. */
export const whaleCorpus = { name: 'synthetic', text: whaleText() };

/** A deterministic English-like corpus (~24 KB): 4,200 words of a fixed list, a sentence every 11. */
export function wordCorpus(): string {
  const words = 'the whale sea ship captain sailed over deep waters and then the crew saw a white shape near harbor at dawn'.split(' ');
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed);
  const out: string[] = [];
  for (let i = 0; i < 4200; i++) out.push(words[rnd() % words.length]! + (i % 11 === 10 ? '.\n' : ' '));
  return out.join('');
}

/**
 * A one-block model that trains in milliseconds per step: the config patch the trainer-level
 * tests start from (pass it through the trainer's `resolveConfig` with the test's overrides).
 */
export const TINY_TRAIN_CONFIG = Object.freeze({
  model: { nLayer: 1, nHead: 2, dModel: 16, seqLen: 16 },
  batchSize: 4,
  steps: 12,
  evalEvery: 0,
  evalBatches: 2,
  checkpointEvery: 0,
  optim: { lr: 3e-3, warmupSteps: 2 },
});

/**
 * `(over) => resolve(TINY_TRAIN_CONFIG, base, over)`: the caller passes the trainer's resolveConfig,
 * which keeps this package free of patchflow imports; `base` adjusts the tiny model for a suite.
 */
export function tinyConfigWith<C>(resolve: (...patches: Record<string, unknown>[]) => C, base: Record<string, unknown> = {}): (over?: Record<string, unknown>) => C {
  return (over = {}) => resolve(structuredClone(TINY_TRAIN_CONFIG) as Record<string, unknown>, base, over);
}

/**
 * A temp directory for one test file: created before its tests, removed after them. Returns a
 * function giving the directory's path (valid once the tests run).
 */
export function suiteTempDir(prefix = 'patchflow-test-'): () => string {
  let dir = '';
  beforeAll(() => {
    dir = tempDir(prefix);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  return () => dir;
}

/** A fresh temp directory (under the OS temp dir) with the given prefix. */
export function tempDir(prefix = 'patchflow-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Runs a CLI script synchronously in `cwd` with PATCHFLOW_DEBUG and PATCHFLOW_BACKEND_MODULES unset. */
export function runCliSync(bin: string, args: string[], cwd: string): { status: number | null; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.PATCHFLOW_DEBUG;
  delete env.PATCHFLOW_BACKEND_MODULES;
  const r = spawnSync(process.execPath, [bin, ...args], { cwd, env, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
