/**
 * The run-directory lock: one writer per run directory.
 *
 * The atomic checkpoint swap (checkpoint.ts) protects a run against its own crash, not against a
 * second process writing the same directory (two runs would race on the swap and interleave
 * metrics.jsonl). So a writer holds `<dir>/.patchflow.lock` for its whole run: created with O_EXCL
 * (exclusive create: exactly one of two racing processes gets it), holding JSON
 * `{pid, host, bootId, started, command}`, and removed when the run ends, whatever the exit path
 * (normal end, error, interrupt; `process.exit` through an exit hook).
 *
 * A lock whose process is gone is stale (kill -9, power loss): the same host, and either another
 * boot (Linux boot id) or no live process with that pid. It is taken over, and the caller is told
 * (`RunLock.tookOver`). A lock from another host is never taken over: its process cannot be
 * checked from here, so the error says how to clear it by hand.
 *
 * Readers (evaluation, generation, export) take no lock: they read the last complete checkpoint
 * (loadCheckpoint checks that every file of it belongs to the same save).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PatchflowError } from '@patchflow/tensor';

export const LOCK_FILE = '.patchflow.lock';

export interface LockHolder {
  pid: number;
  host: string;
  /** Linux boot id (/proc/sys/kernel/random/boot_id); absent elsewhere. */
  bootId?: string;
  /** ISO time the lock was taken. */
  started: string;
  /** What holds it, e.g. 'patchflow train'. */
  command: string;
}

/** The directory is in use by another live writer, or locked from another host. */
export class RunLockError extends PatchflowError {
  override name = 'RunLockError';
  constructor(
    message: string,
    readonly dir: string,
    readonly holder: LockHolder,
    /** 'busy': a live process holds it; 'foreign': another host's lock, not checkable from here. */
    readonly reason: 'busy' | 'foreign',
  ) {
    super(message);
  }
}

export interface RunLock {
  readonly dir: string;
  readonly file: string;
  /** The stale lock this one replaced, if any. */
  readonly tookOver?: LockHolder;
  /** Removes the lock (and the directory, when acquiring created it and it is still empty). Idempotent. */
  release(): void;
}

function bootId(): string | undefined {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to another user
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The lock's holder, or undefined when there is no lock (or it cannot be parsed: treated as stale). */
export function readRunLock(dir: string): LockHolder | undefined {
  let text: string;
  try {
    text = fs.readFileSync(path.join(dir, LOCK_FILE), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const h = JSON.parse(text) as Partial<LockHolder>;
    if (typeof h.pid === 'number' && typeof h.host === 'string' && typeof h.started === 'string') {
      return { pid: h.pid, host: h.host, bootId: h.bootId, started: h.started, command: h.command ?? 'patchflow' };
    }
  } catch {
    // torn or foreign content
  }
  return { pid: -1, host: os.hostname(), started: new Date(0).toISOString(), command: 'unknown (unreadable lock file)' };
}

/** Whether a lock's process is certainly gone (same host, and another boot or no such process). */
export function isStale(h: LockHolder): boolean {
  if (h.host !== os.hostname()) return false;
  if (h.pid <= 0) return true;
  const boot = bootId();
  if (h.bootId && boot && h.bootId !== boot) return true;
  return h.pid !== process.pid && !processAlive(h.pid);
}

/** `17:51:02`, with the date when it is not today. */
export function formatStarted(iso: string, now = new Date()): string {
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return iso;
  const p2 = (n: number) => String(n).padStart(2, '0');
  const time = `${p2(t.getHours())}:${p2(t.getMinutes())}:${p2(t.getSeconds())}`;
  return t.toDateString() === now.toDateString() ? time : `${t.getFullYear()}-${p2(t.getMonth() + 1)}-${p2(t.getDate())} ${time}`;
}

function lockError(dir: string, h: LockHolder): RunLockError {
  if (h.host !== os.hostname()) {
    return new RunLockError(
      `${dir} is locked by ${h.command} pid ${h.pid} on host ${h.host} (started ${formatStarted(h.started)}); ` +
        `its process cannot be checked from here. If no run is using the directory, delete ${path.join(dir, LOCK_FILE)}`,
      dir,
      h,
      'foreign',
    );
  }
  return new RunLockError(
    `${dir} is in use by ${h.command} pid ${h.pid} (started ${formatStarted(h.started)}); wait for it or use another output directory`,
    dir,
    h,
    'busy',
  );
}

/** Throws RunLockError when another live process (or another host) holds the lock on `dir`; a stale or absent lock passes. */
export function checkRunLock(dir: string): void {
  const h = readRunLock(dir);
  if (h && h.pid !== process.pid && !isStale(h)) throw lockError(dir, h);
}

const held = new Set<RunLock>();
let exitHook = false;

/**
 * Takes the lock on run directory `dir` (created if missing), or throws RunLockError naming the
 * holder. A stale lock is taken over (see the module comment); `tookOver` says whose it was.
 */
export function acquireRunLock(dir: string, command = 'patchflow'): RunLock {
  const created = !fs.existsSync(dir);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, LOCK_FILE);
  const me: LockHolder = { pid: process.pid, host: os.hostname(), bootId: bootId(), started: new Date().toISOString(), command };
  let tookOver: LockHolder | undefined;
  for (let attempt = 0; ; attempt++) {
    let fd: number;
    try {
      fd = fs.openSync(file, 'wx', 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 20) throw e;
      const holder = readRunLock(dir);
      if (!holder) continue; // released meanwhile: try again
      if (!isStale(holder)) throw lockError(dir, holder);
      // Move the stale lock aside; of two processes doing this at once, one rename wins and the
      // other finds the file gone (ENOENT) and simply tries the exclusive create again.
      const aside = `${file}.stale-${process.pid}-${attempt}`;
      try {
        fs.renameSync(file, aside);
        fs.rmSync(aside, { force: true });
        tookOver = holder;
      } catch {
        // someone else moved it first
      }
      continue;
    }
    try {
      fs.writeSync(fd, JSON.stringify(me) + '\n');
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    break;
  }
  let released = false;
  const lock: RunLock = {
    dir,
    file,
    tookOver,
    release() {
      if (released) return;
      released = true;
      held.delete(lock);
      // remove it only while it is still ours (a user may have deleted it by hand and another run taken it)
      const h = readRunLock(dir);
      if (h && h.pid === me.pid && h.started === me.started) fs.rmSync(file, { force: true });
      if (created) {
        try {
          fs.rmdirSync(dir); // only succeeds when nothing else was written
        } catch {
          // not empty: the run wrote something, keep it
        }
      }
    },
  };
  held.add(lock);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const l of [...held]) l.release();
    });
  }
  return lock;
}
