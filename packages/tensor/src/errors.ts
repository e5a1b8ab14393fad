/**
 * The one error base of patchflow's packages.
 *
 * A `PatchflowError` says whether its message is meant for the user (`userError`: bad input, a
 * missing driver, a full disk: things the user can act on) and which exit code a command line
 * should stop with. The CLI reads these two fields (duck-typed, so a second copy of a package
 * still matches) instead of keeping a list of class names: a new error class cannot be forgotten.
 * Anything thrown that is not a user error is a bug.
 */

/** Exit codes of errors that are not bugs (1 is the internal-error code). */
export const EXIT_CODES = Object.freeze({
  /** Bad input: a flag, config key, file, backend name, ... */
  usage: 2,
  /** Training diverged (non-finite loss or gradient norm); the last good checkpoint is kept. */
  diverged: 3,
  /** The environment refused a write (full disk, read-only or permission-denied directory, I/O error). */
  storage: 4,
  /** The GPU failed during the run (device lost, a driver error); the last checkpoint is kept. */
  device: 5,
});

export class PatchflowError extends Error {
  /** True: the message is for the user and a CLI prints it as one line. False: a bug. */
  readonly userError: boolean = true;
  /** Exit code for a command line that stops on this error. */
  readonly exitCode: number = EXIT_CODES.usage;
}

/** Duck-typed check (works across copies of this package): a user-facing error and its exit code. */
export function userErrorInfo(err: unknown): { exitCode: number; message: string } | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { userError?: unknown; exitCode?: unknown; message?: unknown };
  if (e.userError !== true) return undefined;
  return {
    exitCode: typeof e.exitCode === 'number' && Number.isInteger(e.exitCode) && e.exitCode > 1 ? e.exitCode : EXIT_CODES.usage,
    message: typeof e.message === 'string' ? e.message : String(err),
  };
}
