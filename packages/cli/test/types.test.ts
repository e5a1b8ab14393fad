/**
 * The option types reject unknown keys at compile time: tsc --strict over test/fixtures/strict-types.ts,
 * whose typos are each marked @ts-expect-error (an unmarked typo or an unused marker fails).
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const dir = path.dirname(fileURLToPath(import.meta.url));

describe('public option types', () => {
  it('reject misspelt keys and wrong value types under tsc --strict', () => {
    const tsc = path.resolve(dir, '../../../node_modules/typescript/bin/tsc');
    const r = spawnSync(
      process.execPath,
      [tsc, '--noEmit', '--strict', '--module', 'esnext', '--moduleResolution', 'bundler', '--target', 'es2022', '--skipLibCheck', '--types', 'node', path.join(dir, 'fixtures/strict-types.ts')],
      { encoding: 'utf8' },
    );
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  }, 120_000);
});
