/**
 * A small typed argv parser for the `patchflow` commands (no dependencies).
 *
 * Supported syntax: `--flag value`, `--flag=value`, boolean `--flag` / `--no-flag` /
 * `--flag=true|false`, an optional one-letter alias `-s value`, positional arguments,
 * `--` (everything after it is positional), and `--help` / `-h`.
 */
import { UserError } from './errors.js';

export type FlagType = 'int' | 'number' | 'string' | 'boolean';
export type FlagValue = number | string | boolean;

export interface FlagSpec {
  /** Long name without dashes, e.g. `steps` or `batch-size`; values are keyed by it. */
  readonly name: string;
  readonly type: FlagType;
  readonly help: string;
  /** Used when the flag is not given. Without it the value is `undefined`. */
  readonly default?: FlagValue;
  /** Optional one-letter alias, e.g. `o` for `-o`. */
  readonly short?: string;
  /** Placeholder in help text, e.g. `path` → `--out <path>`. Default: the type. */
  readonly placeholder?: string;
}

export interface PositionalSpec {
  readonly name: string;
  readonly help: string;
  /** Default true. Optional positionals must come after the required ones. */
  readonly required?: boolean;
  /** Takes all remaining arguments; only the last positional may be variadic. */
  readonly variadic?: boolean;
}

export interface CommandSpec<F extends readonly FlagSpec[] = readonly FlagSpec[]> {
  readonly name: string;
  readonly summary: string;
  readonly flags: F;
  /**
   * Positional arguments in order. A bare string `'suite'` is shorthand for
   * `{ name: 'suite', help: '', required: false }`: the name for help text, and the command
   * checks the value itself. Without `positionals` the command takes none.
   */
  readonly positionals?: readonly (PositionalSpec | string)[];
}

type TypeOf<T extends FlagType> = T extends 'boolean' ? boolean : T extends 'string' ? string : number;

/** The parsed values of a flag list; precise when the spec is declared `as const`. */
export type FlagValues<F extends readonly FlagSpec[]> = {
  [S in F[number] as S['name']]: S extends { readonly default: FlagValue }
    ? TypeOf<S['type']>
    : TypeOf<S['type']> | undefined;
};

export interface ParsedArgs<F extends readonly FlagSpec[] = readonly FlagSpec[]> {
  /** Flag values by name, plus the built-in `help`. */
  values: FlagValues<F> & { help: boolean };
  positionals: string[];
  /** `--help` or `-h` was given: values hold defaults only, nothing else was checked. */
  help: boolean;
}

export interface ParsedCommand {
  /** The command's name; `''` for top-level help (`patchflow --help`, `-h`, `help`). */
  command: string;
  /** The command's spec; `null` only for top-level help. */
  spec: CommandSpec | null;
  /** Flag values by name (defaults filled in), plus the built-in `help`. */
  values: Record<string, FlagValue | undefined> & { help: boolean };
  positionals: string[];
  /** Help was asked for: nothing but `--help` was checked; print the help and exit 0. */
  help: boolean;
}

export interface HelpOptions {
  /** Program name in usage lines. Default `patchflow`. */
  program?: string;
}

/** Levenshtein edit distance (insert, delete, substitute; each costs 1). */
export function levenshtein(a: string, b: string): number {
  if (a === b) return 0;
  if (a.length === 0) return b.length;
  if (b.length === 0) return a.length;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  let cur = new Array<number>(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length]!;
}

/**
 * The candidate closest to `word` within `maxDistance` edits (first declared wins ties), or
 * undefined. A candidate must also differ in fewer characters than `word` has, so that
 * `--x` does not "suggest" every two-letter flag.
 */
export function closestMatch(word: string, candidates: readonly string[], maxDistance = 2): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = levenshtein(word, candidate);
    if (d <= maxDistance && d < word.length && d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

const NUMBER_RE = /^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$/i;

function parseValue(flag: FlagSpec, raw: string, shown: string): FlagValue {
  switch (flag.type) {
    case 'string':
      return raw;
    case 'int': {
      const n = NUMBER_RE.test(raw) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n)) throw new UserError(`${shown} expects an integer, got '${raw}'`);
      return n;
    }
    case 'number': {
      const n = NUMBER_RE.test(raw) ? Number(raw) : NaN;
      if (!Number.isFinite(n)) throw new UserError(`${shown} expects a number, got '${raw}'`);
      return n;
    }
    case 'boolean': {
      const v = raw.toLowerCase();
      if (v === 'true' || v === '1' || v === 'yes') return true;
      if (v === 'false' || v === '0' || v === 'no') return false;
      throw new UserError(`${shown} expects true or false, got '${raw}'`);
    }
  }
}

function isHelpToken(token: string): boolean {
  return token === '--help' || token === '-h';
}

/** Can `token` be the value of a flag given as a separate argument? */
function looksLikeValue(flag: FlagSpec, token: string | undefined): token is string {
  if (token === undefined) return false;
  if (token === '-' || !token.startsWith('-')) return true;
  // Negative numbers are values for numeric flags; `--lr -1e-3` is meant as a value.
  return (flag.type === 'int' || flag.type === 'number') && NUMBER_RE.test(token);
}

/** Positionals of a spec with the string shorthand expanded. */
export function positionalSpecs(spec: CommandSpec): PositionalSpec[] {
  return (spec.positionals ?? []).map((p) => (typeof p === 'string' ? { name: p, help: '', required: false } : p));
}

function validateSpec(spec: CommandSpec): void {
  const seen = new Set<string>();
  for (const flag of spec.flags) {
    if (!/^[A-Za-z][A-Za-z0-9-]*$/.test(flag.name)) throw new Error(`${spec.name}: invalid flag name '${flag.name}'`);
    if (flag.name === 'help') throw new Error(`${spec.name}: --help is built in`);
    if (seen.has(flag.name)) throw new Error(`${spec.name}: duplicate flag --${flag.name}`);
    seen.add(flag.name);
    if (flag.short !== undefined) {
      if (!/^[A-Za-z]$/.test(flag.short) || flag.short === 'h') throw new Error(`${spec.name}: invalid alias -${flag.short}`);
      if (seen.has(`-${flag.short}`)) throw new Error(`${spec.name}: duplicate alias -${flag.short}`);
      seen.add(`-${flag.short}`);
    }
    if (flag.default !== undefined) {
      const expected = flag.type === 'int' || flag.type === 'number' ? 'number' : flag.type;
      if (typeof flag.default !== expected || (flag.type === 'int' && !Number.isInteger(flag.default))) {
        throw new Error(`${spec.name}: default of --${flag.name} is not of type ${flag.type}`);
      }
    }
  }
  const positionals = positionalSpecs(spec);
  positionals.forEach((p, i) => {
    if (p.variadic && i !== positionals.length - 1) throw new Error(`${spec.name}: only the last positional may be variadic`);
    if (p.required !== false && i > 0 && positionals[i - 1]!.required === false) {
      throw new Error(`${spec.name}: required positional <${p.name}> follows an optional one`);
    }
  });
}

function defaults(spec: CommandSpec): Record<string, FlagValue | undefined> & { help: boolean } {
  const values: Record<string, FlagValue | undefined> & { help: boolean } = { help: false };
  for (const flag of spec.flags) values[flag.name] = flag.default;
  return values;
}

/**
 * Parse the arguments of one command (argv without the command name).
 * Throws {@link UserError} for anything the user got wrong.
 */
export function parseArgs<const F extends readonly FlagSpec[]>(
  argv: readonly string[],
  spec: CommandSpec<F>,
  options: HelpOptions = {},
): ParsedArgs<F> {
  validateSpec(spec);
  const program = options.program ?? 'patchflow';
  const values = defaults(spec);
  const positionals: string[] = [];

  const dashDash = argv.indexOf('--');
  if ((dashDash < 0 ? argv : argv.slice(0, dashDash)).some(isHelpToken)) {
    values.help = true;
    return { values: values as FlagValues<F> & { help: boolean }, positionals, help: true };
  }

  const byName = new Map(spec.flags.map((f) => [f.name, f] as const));
  const byShort = new Map(spec.flags.filter((f) => f.short).map((f) => [f.short!, f] as const));
  const where = `'${program} ${spec.name}'`;

  const unknown = (shown: string, bare: string): UserError => {
    const suggestion = closestMatch(bare, [...byName.keys(), 'help']);
    return new UserError(
      suggestion !== undefined
        ? `unknown flag '${shown}' for ${where}; did you mean '--${suggestion}'?`
        : `unknown flag '${shown}' for ${where}; see '${program} ${spec.name} --help'`,
    );
  };

  const declaredCount = spec.positionals?.length ?? 0;
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    if (token === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (token.startsWith('--')) {
      const eq = token.indexOf('=');
      const name = eq < 0 ? token.slice(2) : token.slice(2, eq);
      const inline = eq < 0 ? undefined : token.slice(eq + 1);
      let flag = byName.get(name);
      if (flag === undefined && name.startsWith('no-') && byName.has(name.slice(3))) {
        const negated = byName.get(name.slice(3))!;
        if (negated.type !== 'boolean') {
          throw new UserError(`--${negated.name} is not a boolean flag, so '--${name}' is not allowed`);
        }
        if (inline !== undefined) throw new UserError(`--${name} does not take a value`);
        values[negated.name] = false;
        continue;
      }
      if (flag === undefined) throw unknown(eq < 0 ? token : token.slice(0, eq), name);
      const shown = `--${flag.name}`;
      if (flag.type === 'boolean') {
        values[flag.name] = inline === undefined ? true : parseValue(flag, inline, shown);
        continue;
      }
      if (inline !== undefined) {
        if (inline === '') throw new UserError(`${shown} expects a value, got an empty string`);
        values[flag.name] = parseValue(flag, inline, shown);
        continue;
      }
      const next = argv[i + 1];
      if (!looksLikeValue(flag, next)) throw new UserError(`${shown} expects a value (${flag.type})`);
      values[flag.name] = parseValue(flag, next, shown);
      i++;
      continue;
    }
    if (token.startsWith('-') && token !== '-' && !(declaredCount > 0 && NUMBER_RE.test(token))) {
      const flag = token.length === 2 ? byShort.get(token[1]!) : undefined;
      if (flag === undefined) {
        throw new UserError(`unknown flag '${token}' for ${where}; see '${program} ${spec.name} --help'`);
      }
      const shown = `-${flag.short} (--${flag.name})`;
      if (flag.type === 'boolean') {
        values[flag.name] = true;
        continue;
      }
      const next = argv[i + 1];
      if (!looksLikeValue(flag, next)) throw new UserError(`${shown} expects a value (${flag.type})`);
      values[flag.name] = parseValue(flag, next, shown);
      i++;
      continue;
    }
    positionals.push(token);
  }

  const declared = positionalSpecs(spec);
  const variadic = declared.length > 0 && declared[declared.length - 1]!.variadic === true;
  if (!variadic && positionals.length > declared.length) {
    const extra = positionals[declared.length]!;
    throw new UserError(
      declared.length === 0
        ? `${where} takes no positional arguments, got '${extra}'`
        : `unexpected argument '${extra}' for ${where} (expected ${declared.map(positionalUsage).join(' ')})`,
    );
  }
  for (let i = positionals.length; i < declared.length; i++) {
    if (declared[i]!.required !== false) {
      throw new UserError(`missing argument <${declared[i]!.name}> for ${where}; see '${program} ${spec.name} --help'`);
    }
  }
  return { values: values as FlagValues<F> & { help: boolean }, positionals, help: false };
}

/**
 * Parse `argv` (without node and script: `process.argv.slice(2)`) into a command and its
 * arguments. Unknown or missing commands throw {@link UserError} listing the commands.
 *
 * - `patchflow <command> --help` and `patchflow help <command>` return `help: true` with that
 *   command; print {@link formatHelp} for it.
 * - `patchflow --help`, `patchflow -h` and `patchflow help` return `{ command: '', spec: null, help: true }`;
 *   print {@link formatCommandList} for it.
 */
export function parseCommand(
  argv: readonly string[],
  commands: readonly CommandSpec[],
  options: HelpOptions = {},
): ParsedCommand {
  const program = options.program ?? 'patchflow';
  const names = commands.map((c) => c.name);
  const list = names.join(', ');
  const first = argv[0];
  if (first === undefined) {
    throw new UserError(`missing command; expected one of: ${list} (see '${program} --help')`);
  }
  if (isHelpToken(first) || first === 'help') {
    const target = first === 'help' ? argv[1] : undefined;
    if (target === undefined) return { command: '', spec: null, values: { help: true }, positionals: [], help: true };
    return parseCommand([target, '--help'], commands, options);
  }
  const command = commands.find((c) => c.name === first);
  if (command === undefined) {
    if (first.startsWith('-')) {
      throw new UserError(`expected a command before '${first}'; commands: ${list}`);
    }
    const suggestion = closestMatch(first, names);
    throw new UserError(
      `unknown command '${first}'${suggestion ? `; did you mean '${suggestion}'?` : ''} (commands: ${list})`,
    );
  }
  const parsed = parseArgs(argv.slice(1), command, options);
  return { command: command.name, spec: command, values: parsed.values, positionals: parsed.positionals, help: parsed.help };
}

function positionalUsage(p: PositionalSpec): string {
  const inner = `${p.name}${p.variadic ? '...' : ''}`;
  return p.required === false ? `[${inner}]` : `<${inner}>`;
}

function flagUsage(flag: FlagSpec): string {
  const alias = flag.short ? `-${flag.short}, ` : '';
  if (flag.type === 'boolean') return `${alias}--${flag.default === true ? '[no-]' : ''}${flag.name}`;
  return `${alias}--${flag.name} <${flag.placeholder ?? flag.type}>`;
}

function twoColumns(rows: readonly [string, string][], indent = '  ', gap = 2): string[] {
  const width = Math.max(0, ...rows.map(([left]) => left.length));
  return rows.map(([left, right]) => `${indent}${left.padEnd(width + gap)}${right}`.trimEnd());
}

/** Help text of one command, ending with a newline. */
export function formatHelp(spec: CommandSpec, options: HelpOptions = {}): string {
  const program = options.program ?? 'patchflow';
  const positionals = positionalSpecs(spec);
  const usage = [program, spec.name];
  if (spec.flags.length > 0) usage.push('[options]');
  usage.push(...positionals.map(positionalUsage));
  const lines = [`Usage: ${usage.join(' ')}`, '', spec.summary];
  if (positionals.length > 0) {
    lines.push('', 'Arguments:');
    lines.push(...twoColumns(positionals.map((p) => [positionalUsage(p), p.help] as [string, string])));
  }
  const rows: [string, string][] = spec.flags.map((flag) => {
    const def = flag.default === undefined || (flag.type === 'boolean' && flag.default === false)
      ? ''
      : ` (default: ${typeof flag.default === 'string' ? JSON.stringify(flag.default) : String(flag.default)})`;
    return [flagUsage(flag), `${flag.help}${def}`];
  });
  rows.push(['-h, --help', 'Show this help']);
  lines.push('', 'Options:', ...twoColumns(rows));
  return `${lines.join('\n')}\n`;
}

/** Top-level help: the list of commands, ending with a newline. */
export function formatCommandList(commands: readonly CommandSpec[], options: HelpOptions & { summary?: string } = {}): string {
  const program = options.program ?? 'patchflow';
  const lines = [`Usage: ${program} <command> [options]`];
  if (options.summary) lines.push('', options.summary);
  lines.push('', 'Commands:', ...twoColumns(commands.map((c) => [c.name, c.summary])));
  lines.push('', `Run '${program} <command> --help' for the options of a command.`);
  return `${lines.join('\n')}\n`;
}
