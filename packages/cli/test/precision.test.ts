/**
 * --precision: the flag sets config key `precision`, a bad value is a one-line error, and f16 where
 * it cannot run (a CPU backend, --no-compile) stops before step 1. Spawns the built CLI.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tempDir } from '@patchflow/test-fixtures';
import { configFromFlags } from '../src/train.js';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'patchflow.js');

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: tempDir('pf-cli-precision-'), encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status, stderr: r.stderr.trim(), stdout: r.stdout };
}

describe('--precision', () => {
  it('sets config key precision (default fp32)', () => {
    expect(configFromFlags({ precision: 'f16' }).precision).toBe('f16');
    expect(configFromFlags({}).precision).toBe('fp32');
  });

  it('a bad value, or f16 without a compiled step, is a one-line error before step 1', () => {
    const bad = cli(['train', '--precision', 'bf16', '--steps', '2']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('patchflow: invalid config: precision must be one of fp32, f16, got "bf16"');
    const cpu = cli(['train', '--precision', 'f16', '--steps', '2']);
    expect(cpu.code).toBe(2);
    expect(cpu.stderr).toBe(`patchflow: invalid config: precision 'f16' needs a backend with a compiled step (webgpu); backend "cpu" has none`);
    const eager = cli(['train', '--precision', 'f16', '--backend', 'webgpu', '--no-compile', '--steps', '2']);
    expect(eager.code).toBe(2);
    expect(eager.stderr).toBe(`patchflow: invalid config: precision 'f16' runs only on the compiled step; it cannot be combined with compile: false (--no-compile)`);
  });
});
