/**
 * The run-directory lock (runlock.ts) and the trainer's storage errors: one writer per directory,
 * stale locks taken over, foreign locks never, the lock released on every exit path of train(), and
 * a refused checkpoint write reported with the intact checkpoint while that checkpoint stays loadable.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it, vi } from 'vitest';

// An injected write failure: the modules under test call fs.writeSync through this mock, which
// defers to the real one unless a test sets `failWrite`.
const inject = vi.hoisted(() => ({ failWrite: undefined as undefined | ((call: number) => Error | undefined), calls: 0 }));
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const writeSync = ((...args: unknown[]) => {
    const err = inject.failWrite?.(++inject.calls);
    if (err) throw err;
    return (real.writeSync as (...a: unknown[]) => number)(...args);
  }) as typeof real.writeSync;
  return { ...real, writeSync, default: { ...real, writeSync } };
});
const errno = (code: string, text: string) => Object.assign(new Error(`${code}: ${text}, write`), { code, syscall: 'write' });
import {
  LOCK_FILE,
  RunLockError,
  StorageError,
  acquireRunLock,
  checkRunLock,
  formatStarted,
  isStale,
  loadCheckpoint,
  readRunLock,
  resolveConfig,
  saveCheckpoint,
  train,
  DataError,
  DivergenceError,
  type TrainerPlugin,
} from '../src/index.js';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'pf-lock-'));
const text = Array.from({ length: 300 }, (_, i) => `line ${i}: the whale swam ${i % 7} miles.\n`).join('');
const config = (over: Record<string, unknown> = {}) =>
  resolveConfig({ model: { nLayer: 1, nHead: 2, dModel: 16, seqLen: 16 }, batchSize: 2, steps: 4, evalEvery: 0, evalBatches: 1, checkpointEvery: 0 }, over);

/** The pid of a process that has exited (so no process has it, barring reuse within the test). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

function writeLock(dir: string, holder: Record<string, unknown>): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify(holder));
}

describe('acquireRunLock', () => {
  it('creates the lock exclusively with pid, host and start time, and removes it on release', () => {
    const dir = path.join(tmp(), 'run');
    const lock = acquireRunLock(dir, 'patchflow train');
    const h = readRunLock(dir)!;
    expect(h).toMatchObject({ pid: process.pid, host: os.hostname(), command: 'patchflow train' });
    expect(Math.abs(Date.parse(h.started) - Date.now())).toBeLessThan(60_000);
    expect(lock.tookOver).toBeUndefined();
    lock.release();
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);
    // it created the directory and nothing else was written: the directory goes too
    expect(fs.existsSync(dir)).toBe(false);
    lock.release(); // idempotent
  });

  it('keeps a directory it created once the run wrote something', () => {
    const dir = path.join(tmp(), 'run');
    const lock = acquireRunLock(dir);
    fs.writeFileSync(path.join(dir, 'metrics.jsonl'), '{}\n');
    lock.release();
    expect(fs.readdirSync(dir)).toEqual(['metrics.jsonl']);
  });

  it('a second writer fails while the first holds it, naming the holder', () => {
    const dir = tmp();
    const lock = acquireRunLock(dir, 'patchflow train');
    try {
      // another process of this host that is alive: our parent stands in for it
      writeLock(dir, { pid: process.ppid, host: os.hostname(), started: readRunLock(dir)!.started, command: 'patchflow train' });
      const err = (() => {
        try {
          acquireRunLock(dir);
        } catch (e) {
          return e as RunLockError;
        }
        throw new Error('acquired a held lock');
      })();
      expect(err).toBeInstanceOf(RunLockError);
      expect(err.reason).toBe('busy');
      expect(err.message).toBe(`${dir} is in use by patchflow train pid ${process.ppid} (started ${formatStarted(err.holder.started)}); wait for it or use another output directory`);
      expect(() => checkRunLock(dir)).toThrow(RunLockError);
    } finally {
      lock.release();
    }
  });

  it('takes over a stale lock (dead pid, or another boot) and says whose it was', () => {
    for (const stale of [
      { pid: deadPid(), host: os.hostname(), started: '2026-01-02T03:04:05.000Z', command: 'patchflow train' },
      { pid: process.ppid, host: os.hostname(), bootId: 'another-boot', started: '2026-01-02T03:04:05.000Z', command: 'patchflow train' },
    ]) {
      if (stale.bootId && !fs.existsSync('/proc/sys/kernel/random/boot_id')) continue;
      const dir = tmp();
      writeLock(dir, stale);
      expect(isStale(readRunLock(dir)!)).toBe(true);
      expect(() => checkRunLock(dir)).not.toThrow();
      const lock = acquireRunLock(dir);
      expect(lock.tookOver).toMatchObject({ pid: stale.pid, started: stale.started });
      expect(readRunLock(dir)!.pid).toBe(process.pid);
      lock.release();
    }
  });

  it('never takes over another host\'s lock, and says how to clear it', () => {
    const dir = tmp();
    writeLock(dir, { pid: deadPid(), host: 'elsewhere.example', started: new Date().toISOString(), command: 'patchflow train' });
    expect(() => acquireRunLock(dir)).toThrow(
      new RegExp(`is locked by patchflow train pid \\d+ on host elsewhere\\.example .*delete ${path.join(dir, LOCK_FILE).replace(/[.]/g, '\\.')}$`),
    );
    expect(readRunLock(dir)!.host).toBe('elsewhere.example');
  });

  it('an unreadable lock file counts as stale', () => {
    const dir = tmp();
    fs.writeFileSync(path.join(dir, LOCK_FILE), '{"pid": 12');
    const lock = acquireRunLock(dir);
    expect(lock.tookOver?.command).toMatch(/unreadable/);
    lock.release();
  });
});

describe('train() holds the lock for the whole run and releases it on every exit path', () => {
  const lockSeen = (dir: string): TrainerPlugin => ({
    name: 'lock-spy',
    plan: (p) => p.map((x) => ({ ...x, plugins: { ...x.plugins, 'lock-spy': {} } })),
    afterStep: () => {
      expect(readRunLock(dir)?.pid).toBe(process.pid);
    },
  });

  it('normal end', async () => {
    const dir = tmp();
    const r = await train({ config: config(), corpus: { name: 't', text }, outDir: dir, plugins: [lockSeen(dir)] });
    r.model.dispose();
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);
  });

  it('an error before step 1, a plugin that throws, divergence', async () => {
    const dir = tmp();
    await expect(train({ config: config({ model: { nLayer: 1, nHead: 2, dModel: 16, seqLen: 512 } }), corpus: { name: 't', text: 'too short' }, outDir: dir })).rejects.toThrow(DataError);
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);
    const boom: TrainerPlugin = { name: 'boom', plan: (p) => p.map((x) => ({ ...x, plugins: { ...x.plugins, boom: {} } })), afterStep: () => { throw new Error('plugin failed'); } };
    await expect(train({ config: config(), corpus: { name: 't', text }, outDir: dir, plugins: [boom] })).rejects.toThrow('plugin failed');
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);
    const nan: TrainerPlugin = { name: 'nan', plan: (p) => p.map((x) => ({ ...x, plugins: { ...x.plugins, nan: {} } })), loss: () => { throw new DivergenceError('forced'); } };
    await expect(train({ config: config(), corpus: { name: 't', text }, outDir: tmp(), plugins: [nan] })).rejects.toThrow(DivergenceError);
  });

  it('an interrupt (AbortSignal): checkpoint saved, lock released', async () => {
    const dir = tmp();
    const ac = new AbortController();
    const stopper: TrainerPlugin = { name: 'stop', plan: (p) => p.map((x) => ({ ...x, plugins: { ...x.plugins, stop: {} } })), afterStep: () => ac.abort() };
    const r = await train({ config: config({ steps: 10 }), corpus: { name: 't', text }, outDir: dir, plugins: [stopper], signal: ac.signal });
    r.model.dispose();
    expect(r.interrupted).toBe(true);
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);
    expect((loadCheckpoint(dir).state as { step: number }).step).toBe(1);
  });

  it('a second train() on a directory in use fails before step 1', async () => {
    const dir = tmp();
    writeLock(dir, { pid: process.ppid, host: os.hostname(), started: new Date().toISOString(), command: 'patchflow train' });
    const steps: number[] = [];
    await expect(train({ config: config(), corpus: { name: 't', text }, outDir: dir, onEvent: (e) => e.type === 'step' && steps.push(e.step) })).rejects.toThrow(RunLockError);
    expect(steps).toEqual([]);
    expect(readRunLock(dir)!.pid).toBe(process.ppid); // someone else's lock is left alone
  });
});

describe('refused writes', () => {
  it('saveCheckpoint: ENOSPC mid-write is a StorageError naming the file; the previous checkpoint stays loadable', () => {
    const dir = tmp();
    const weights = { w: { shape: [4], data: new Float32Array([1, 2, 3, 4]) } };
    saveCheckpoint(dir, { weights, optimizer: {}, state: { config: {}, step: 10 } });
    inject.calls = 0;
    inject.failWrite = (n) => (n === 2 ? errno('ENOSPC', 'no space left on device') : undefined);
    try {
      const err = (() => {
        try {
          saveCheckpoint(dir, { weights: { w: { shape: [4], data: new Float32Array(4) } }, optimizer: {}, state: { config: {}, step: 20 } });
        } catch (e) {
          return e as StorageError;
        }
        throw new Error('the save did not fail');
      })();
      expect(err).toBeInstanceOf(StorageError);
      expect(err.code).toBe('ENOSPC');
      expect(err.message).toMatch(/^could not write the checkpoint \(.*checkpoint\.tmp-[^/]+\/model\.safetensors\): no space left on device \(ENOSPC\)$/);
    } finally {
      inject.failWrite = undefined;
    }
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    const back = loadCheckpoint(dir);
    expect((back.state as any).step).toBe(10);
    expect([...back.weights.w!.data]).toEqual([1, 2, 3, 4]);
  });

  it('train(): a checkpoint that cannot be written ends the run with the intact step', async () => {
    const dir = tmp();
    let armed = false;
    const failer: TrainerPlugin = { name: 'arm', plan: (p) => p.map((x) => ({ ...x, plugins: { ...x.plugins, arm: {} } })), afterStep: (c) => void (armed = c.step >= 3) };
    inject.failWrite = () => (armed ? errno('EIO', 'i/o error') : undefined);
    try {
      await expect(train({ config: config({ steps: 6, checkpointEvery: 2 }), corpus: { name: 't', text }, outDir: dir, plugins: [failer] })).rejects.toThrow(
        /^could not write the checkpoint of step 4 \(.*\): input\/output error \(EIO\); the checkpoint of step 2 in .*checkpoint is intact$/,
      );
    } finally {
      inject.failWrite = undefined;
    }
    expect((loadCheckpoint(dir).state as { step: number }).step).toBe(2);
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);
  });
});

// A reader next to a live writer: another process saves checkpoint after checkpoint into the same
// directory (weights and optimizer filled with the step number) while this one loads in a loop.
// Every load must be one complete save: both files and state.json agree. Uses the built package.
const dist = path.join(path.dirname(new URL(import.meta.url).pathname), '../dist/index.js');
describe.skipIf(!fs.existsSync(dist))('loadCheckpoint while another process saves', () => {
  it('always returns one complete checkpoint', async () => {
    const dir = tmp();
    const n = 20_000;
    const save = (step: number) =>
      saveCheckpoint(dir, { weights: { w: { shape: [n], data: new Float32Array(n).fill(step) } }, optimizer: { m: { shape: [n], data: new Float32Array(n).fill(step) } }, state: { config: {}, step } });
    save(0);
    const writer = (await import('node:child_process')).spawn(
      process.execPath,
      ['--input-type=module', '-e', `const m = await import(${JSON.stringify(dist)}); const end = Date.now() + 3000; for (let s = 1; Date.now() < end; s++) m.saveCheckpoint(${JSON.stringify(dir)}, { weights: { w: { shape: [${n}], data: new Float32Array(${n}).fill(s) } }, optimizer: { m: { shape: [${n}], data: new Float32Array(${n}).fill(s) } }, state: { config: {}, step: s } });`],
      { stdio: 'inherit' },
    );
    const exited = new Promise((r) => writer.on('close', r));
    const seen = new Set<number>();
    let done = false;
    void exited.then(() => (done = true));
    while (!done) {
      const c = loadCheckpoint(dir);
      const step = (c.state as any).step as number;
      expect(c.weights.w!.data[0]).toBe(step);
      expect(c.weights.w!.data[n - 1]).toBe(step);
      expect(c.optimizer.m!.data[n - 1]).toBe(step);
      seen.add(step);
      await new Promise((r) => setImmediate(r));
    }
    // the reader really overlapped with many saves
    expect(seen.size).toBeGreaterThan(5);
  }, 30_000);
});
