/**
 * Error policy of the `patchflow` command line.
 *
 * - A mistake by the user (bad flag, missing file, bad config, ...) is printed as one line,
 *   `patchflow: <message>`, on stderr, never with a stack trace, and exits with code 2.
 * - Errors thrown by the libraries that are about the user's input are recognised *by name*
 *   (`err.name`), so the CLI does not need to import every error class and copies of a class
 *   from different module instances still match.
 * - Anything else is a bug: `patchflow: internal error: <message>`, the stack only when
 *   `PATCHFLOW_DEBUG=1`, exit code 1.
 */

/** Exit codes used by the CLI. */
export const EXIT_OK = 0;
export const EXIT_INTERNAL = 1;
export const EXIT_USAGE = 2;
export const EXIT_DIVERGED = 3;

/** A mistake by the user: printed as one line without a stack trace, exit code 2. */
export class UserError extends Error {
  override name = 'UserError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Names of error classes (from the libraries) whose messages are meant for the user. */
export const USER_ERROR_NAMES: readonly string[] = Object.freeze([
  'DataError',
  'CheckpointError',
  'ConfigError',
  'BackendError',
  'DivergenceError',
]);

/** Exit codes for user-facing errors other than the default 2. */
export const USER_ERROR_EXIT_CODES: Readonly<Record<string, number>> = Object.freeze({
  DivergenceError: EXIT_DIVERGED,
});

export interface RunCliOptions {
  /** Error names treated as user-facing (in addition to `UserError`). Default: {@link USER_ERROR_NAMES}. */
  userErrorNames?: readonly string[];
  /** Exit code per error name; names not listed exit with 2. Default: {@link USER_ERROR_EXIT_CODES}. */
  exitCodes?: Readonly<Record<string, number>>;
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

/** Decide how an error thrown by a command is reported (pure; used by {@link runCli}). */
export function describeError(err: unknown, options: RunCliOptions = {}): ErrorReport {
  const names = options.userErrorNames ?? USER_ERROR_NAMES;
  const exitCodes = options.exitCodes ?? USER_ERROR_EXIT_CODES;
  const env = options.env ?? process.env;
  const name = errorName(err);
  const message = errorMessage(err);

  if (err instanceof UserError || (name !== undefined && (name === 'UserError' || names.includes(name)))) {
    const exitCode = name !== undefined && exitCodes[name] !== undefined ? exitCodes[name]! : EXIT_USAGE;
    // One line, whatever the library put in the message (JSON.parse errors quote the input, newlines included).
    return { exitCode, text: `patchflow: ${oneLine(message) || name}\n` };
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
