/** `patchflow bench <suite>`: benchmarks that write JSON and print a short table. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FlagSpec } from '../args.js';
import { UserError } from '../errors.js';
import { throughputBench } from './throughput.js';
import { kernelsBench, profileBench } from './kernels.js';
import { patchBench } from './patch.js';
import { sparsityBench } from './sparsity.js';
import { gpuBenchSuite } from './gpu.js';
import { scalingBench } from './scaling.js';

export const BENCH_FLAGS: FlagSpec[] = [
  { name: 'json', type: 'boolean', help: 'print the result as JSON instead of a table' },
  { name: 'out', type: 'string', help: 'also write the JSON result to this file' },
  { name: 'steps', type: 'int', help: 'measured steps per configuration (after one warm-up step)' },
  { name: 'quick', type: 'boolean', help: 'a smaller, faster version of the suite' },
  { name: 'shape', type: 'string', help: 'bench gpu: only the model shapes whose label contains this (e.g. "12L")' },
  { name: 'f16-only', type: 'boolean', help: 'bench gpu: time only the f16 step and f16 matmuls' },
  { name: 'no-eager', type: 'boolean', help: 'bench gpu: skip the eager tfjs-webgpu step (seconds per step at the largest shape)' },
  { name: 'backend', type: 'string', help: 'backend for bench profile and bench scaling (default cpu)' },
  { name: 'data', type: 'string', help: 'bench scaling: the corpus to study (a path or corpus:NAME; default the grid\'s, corpus:english for the full grid)' },
  { name: 'sizes', type: 'string', help: 'bench scaling: only these model sizes of the grid (comma list of labels, e.g. "2L d128")' },
  { name: 'budgets', type: 'string', help: 'bench scaling: only these token budgets of the grid (comma list, e.g. 1000000,4000000)' },
  { name: 'tokenizers', type: 'string', help: 'bench scaling: only these tokenizers of the grid (comma list: bytes and/or BPE vocabulary sizes)' },
  { name: 'merge', type: 'string', help: 'bench scaling: merge these result JSONs (comma list; parts of the grid run separately) into one table, JSON and plots, running nothing' },
  { name: 'plans', type: 'string', help: 'bench scaling: only these plans besides dense (comma list of labels, e.g. "patch K=4 λ=2/3,block 75%")' },
];

const SUITES: Record<string, (values: Record<string, unknown>) => Promise<{ json: unknown; table: string }>> = {
  throughput: throughputBench,
  kernels: kernelsBench,
  profile: profileBench,
  patch: patchBench,
  sparsity: sparsityBench,
  gpu: gpuBenchSuite,
  scaling: scalingBench,
};

export async function benchCommand(positionals: string[], values: Record<string, unknown>): Promise<number> {
  const suite = positionals[0];
  if (!suite) throw new UserError(`bench needs a suite: ${Object.keys(SUITES).join(', ')}`);
  const run = SUITES[suite];
  if (!run) throw new UserError(`unknown bench suite "${suite}" (known: ${Object.keys(SUITES).join(', ')})`);
  const r = await run(values);
  if (typeof values.out === 'string') {
    fs.mkdirSync(path.dirname(path.resolve(values.out)), { recursive: true });
    fs.writeFileSync(values.out, JSON.stringify(r.json, null, 2) + '\n');
  }
  process.stdout.write(values.json ? JSON.stringify(r.json, null, 2) + '\n' : r.table + '\n');
  return 0;
}
