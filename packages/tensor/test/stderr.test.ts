/**
 * captureNativeStderr: what a native library writes to file descriptor 2 is captured, not shown.
 * A child process that inherits fd 2 stands in for native code (both write to the descriptor, not
 * to process.stderr).
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { captureNativeStderr, nativeInfo } from '../src/index.js';

const native = nativeInfo().loaded && process.platform !== 'win32';
const writeFd2 = (text: string) => spawnSync('sh', ['-c', `printf '${text}' >&2`], { stdio: ['ignore', 'ignore', 'inherit'] });

describe.skipIf(!native)('captureNativeStderr', () => {
  it('returns the lines written to fd 2 and the function value', async () => {
    const r = await captureNativeStderr(() => {
      writeFd2('Warning: first\\n    at somewhere.cpp:1\\n\\nsecond');
      return 42;
    });
    expect(r.value).toBe(42);
    expect(r.output).toEqual(['Warning: first', '    at somewhere.cpp:1', 'second']);
  });

  it('restores fd 2 afterwards, also when the function throws (its output rides on the error)', async () => {
    const err = await captureNativeStderr(async () => {
      writeFd2('before the throw\\n');
      throw new Error('boom');
    }).then(
      () => new Error('did not throw') as Error & { nativeStderr?: string[] },
      (e: unknown) => e as Error & { nativeStderr?: string[] },
    );
    expect(err.message).toBe('boom');
    expect(err.nativeStderr).toEqual(['before the throw']);
    // fd 2 is the test process's own again: a nested capture sees only its own output
    const again = await captureNativeStderr(() => writeFd2('after\\n'));
    expect(again.output).toEqual(['after']);
  });

  it('does not nest: an inner call runs uncaptured and its output goes to the outer capture', async () => {
    const outer = await captureNativeStderr(async () => {
      const inner = await captureNativeStderr(() => writeFd2('inner\\n'));
      expect(inner.output).toEqual([]);
    });
    expect(outer.output).toEqual(['inner']);
  });
});
