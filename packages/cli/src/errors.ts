/**
 * Error policy of the `patchflow` command line.
 *
 * - A mistake by the user (bad flag, missing file, bad config, ...) is printed as one line,
 *   `patchflow: <message>`, on stderr, never with a stack trace, and exits with code 2.
 * - Errors thrown by the libraries that are about the user's input or environment are
 *   `PatchflowError`s with `userError: true` and an `exitCode` (2 bad input, 3 divergence,
 *   4 a refused write); they are recognised by those fields, not by class, so every new error
 *   class is covered and copies of a package from different module instances still match.
 * - Anything else is a bug: `patchflow: internal error: <message>`, the stack only when
 *   `PATCHFLOW_DEBUG=1`, exit code 1.
 */

import { EXIT_CODES, PatchflowError, userErrorInfo } from '@patchflow/tensor';
import { withFlagNames } from './config-flags.js';

/** Exit codes used by the CLI. */
export const EXIT_OK = 0;
export const EXIT_INTERNAL = 1;
export const EXIT_USAGE = EXIT_CODES.usage;
export const EXIT_DIVERGED = EXIT_CODES.diverged;
export const EXIT_STORAGE = EXIT_CODES.storage;

/** A mistake by the user found by the CLI itself: printed as one line without a stack trace, exit code 2. */
export class UserError extends PatchflowError {
  override name = 'UserError';
}

export interface RunCliOptions {
  /** Where messages go. Default: `process.stderr`. */
  stderr?: { write(chunk: string): unknown };
  /** Environment read for `PATCHFLOW_DEBUG`. Default: `process.env`. */
  env?: Readonly<Record<string, string | undefined>>;
}

export interface ErrorReport {
  exitCode: number;
  /** Text to print on stderr, ending with a newline. */
  text: string;
}

function errorName(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'name' in err) {
    const name = (err as { name: unknown }).name;
    if (typeof name === 'string') return name;
  }
  return undefined;
}

function errorMessage(err: unknown): string {
  if (typeof err === 'object' && err !== null && 'message' in err) {
    const message = (err as { message: unknown }).message;
    if (typeof message === 'string') return message;
  }
  if (typeof err === 'string') return err;
  try {
    return String(err);
  } catch {
    return Object.prototype.toString.call(err);
  }
}

/** Collapses line breaks (and the indentation around them) into single spaces. */
function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}

/**
 * The libraries speak in config keys and directories; where the CLI has a flag for the same thing,
 * it says so in the flag's words.
 */
function cliWording(err: unknown, message: string): string {
  if (errorName(err) === 'RunLockError') return message.replace(/; wait for it or use another output directory$/, '; wait for it or pass another --out');
  return withFlagNames(message);
}

/** Decide how an error thrown by a command is reported (pure; used by {@link runCli}). */
export function describeError(err: unknown, options: RunCliOptions = {}): ErrorReport {
  const env = options.env ?? process.env;
  const message = errorMessage(err);
  const user = userErrorInfo(err);
  if (user) {
    // One line, whatever the library put in the message (JSON.parse errors quote the input, newlines included).
    return { exitCode: user.exitCode, text: `patchflow: ${oneLine(cliWording(err, user.message)) || errorName(err)}\n` };
  }

  let text = `patchflow: internal error: ${message}\n`;
  if (env.PATCHFLOW_DEBUG === '1') {
    const stack = err instanceof Error ? err.stack : undefined;
    text += stack ? `${stack}\n` : `(no stack trace: a non-Error value was thrown: ${typeof err})\n`;
  } else {
    text += 'patchflow: this is a bug; set PATCHFLOW_DEBUG=1 to see the stack trace\n';
  }
  return { exitCode: EXIT_INTERNAL, text };
}

/**
 * Run a command, turning thrown errors into a message on stderr and an exit code.
 * Returns the command's own exit code when it does not throw.
 */
export async function runCli(fn: () => Promise<number>, options: RunCliOptions = {}): Promise<number> {
  try {
    return await fn();
  } catch (err) {
    const report = describeError(err, options);
    (options.stderr ?? process.stderr).write(report.text);
    return report.exitCode;
  }
}
