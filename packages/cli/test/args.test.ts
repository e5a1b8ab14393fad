import { describe, expect, it } from 'vitest';
import { PatchflowError } from '@patchflow/tensor';
import { DataError, DivergenceError, StorageError } from '@patchflow/trainer';
import { closestMatch, formatCommandList, formatHelp, levenshtein, parseArgs, parseCommand, type CommandSpec } from '../src/args.js';
import { UserError, describeError, runCli } from '../src/errors.js';

const train = {
  name: 'train',
  summary: 'train a model',
  flags: [
    { name: 'steps', type: 'int', help: 'optimizer steps', default: 500 },
    { name: 'lr', type: 'number', help: 'learning rate' },
    { name: 'out', type: 'string', help: 'run directory', default: 'runs/train', short: 'o', placeholder: 'dir' },
    { name: 'resume', type: 'boolean', help: 'continue a run' },
    { name: 'color', type: 'boolean', help: 'colored output', default: true },
    { name: 'batch-size', type: 'int', help: 'sequences per batch' },
  ],
} as const satisfies CommandSpec;

const evalCmd: CommandSpec = {
  name: 'eval',
  summary: 'evaluate a checkpoint',
  flags: [{ name: 'steps', type: 'int', help: 'batches' }],
  positionals: [{ name: 'checkpoint', help: 'checkpoint directory' }, { name: 'more', help: 'extra files', required: false, variadic: true }],
};
const bench: CommandSpec = { name: 'bench', summary: 'benchmarks', flags: [], positionals: ['suite'] };
const commands: CommandSpec[] = [train, evalCmd, bench, { name: 'backends', summary: 'list backends', flags: [] }];

function userError(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }
  throw new Error('expected a UserError');
}

describe('levenshtein / closestMatch', () => {
  it('computes hand-checked distances', () => {
    expect(levenshtein('kitten', 'sitting')).toBe(3);
    expect(levenshtein('stpes', 'steps')).toBe(2); // a transposition is two edits
    expect(levenshtein('', 'abc')).toBe(3);
    expect(levenshtein('lr', 'lr')).toBe(0);
  });
  it('suggests within distance 2 only, first declared on ties', () => {
    expect(closestMatch('step', ['steps', 'seed'])).toBe('steps');
    expect(closestMatch('outt', ['out', 'outs'])).toBe('out');
    expect(closestMatch('zzzzz', ['steps'])).toBeUndefined();
    expect(closestMatch('xy', ['lr'])).toBeUndefined(); // distance 2 but the word has only 2 letters
  });
});

describe('parseArgs', () => {
  it('fills defaults; undefined without a default', () => {
    const r = parseArgs([], train);
    expect(r.values).toEqual({ help: false, steps: 500, lr: undefined, out: 'runs/train', resume: undefined, color: true, 'batch-size': undefined });
    expect(r.positionals).toEqual([]);
    expect(r.help).toBe(false);
  });
  it('reads --flag value, --flag=value, booleans, --no-flag and short aliases', () => {
    const r = parseArgs(['--steps', '120', '--lr=3e-4', '--resume', '--no-color', '-o', 'x/y', '--batch-size=8'], train);
    expect(r.values.steps).toBe(120);
    expect(r.values.lr).toBe(0.0003);
    expect(r.values.resume).toBe(true);
    expect(r.values.color).toBe(false);
    expect(r.values.out).toBe('x/y');
    expect(r.values['batch-size']).toBe(8);
    expect(parseArgs(['--resume=false'], train).values.resume).toBe(false);
    expect(parseArgs(['--steps', '1e3'], train).values.steps).toBe(1000);
  });
  it('takes negative numbers as values of numeric flags; last occurrence wins', () => {
    expect(parseArgs(['--lr', '-0.5'], train).values.lr).toBe(-0.5);
    expect(parseArgs(['--steps', '1', '--steps', '2'], train).values.steps).toBe(2);
  });
  it('rejects bad integers and numbers with the exact message', () => {
    expect(userError(() => parseArgs(['--steps', 'abc'], train))).toBe("--steps expects an integer, got 'abc'");
    expect(userError(() => parseArgs(['--steps=1.5'], train))).toBe("--steps expects an integer, got '1.5'");
    expect(userError(() => parseArgs(['--steps', '0x10'], train))).toBe("--steps expects an integer, got '0x10'");
    expect(userError(() => parseArgs(['--lr', 'fast'], train))).toBe("--lr expects a number, got 'fast'");
    expect(userError(() => parseArgs(['--resume=maybe'], train))).toBe("--resume expects true or false, got 'maybe'");
  });
  it('rejects missing values', () => {
    expect(userError(() => parseArgs(['--steps'], train))).toBe('--steps expects a value (int)');
    expect(userError(() => parseArgs(['--out', '--resume'], train))).toBe('--out expects a value (string)');
    expect(userError(() => parseArgs(['--out='], train))).toMatch(/^--out expects a value/);
  });
  it('names unknown flags and suggests the closest one', () => {
    expect(userError(() => parseArgs(['--stpes', '3'], train))).toBe("unknown flag '--stpes' for 'patchflow train'; did you mean '--steps'?");
    expect(userError(() => parseArgs(['--batchsize=3'], train))).toContain("did you mean '--batch-size'?");
    const far = userError(() => parseArgs(['--frobnicate'], train));
    expect(far).toContain("'--frobnicate'");
    expect(far).not.toContain('did you mean');
    expect(userError(() => parseArgs(['-x'], train))).toContain("unknown flag '-x'");
    expect(userError(() => parseArgs(['--no-steps'], train))).toContain('not a boolean flag');
  });
  it('handles positionals, --, required and too many', () => {
    expect(parseArgs(['ckpt', '--steps', '3', 'a', 'b'], evalCmd).positionals).toEqual(['ckpt', 'a', 'b']);
    expect(parseArgs(['ckpt', '--', '--steps'], evalCmd).positionals).toEqual(['ckpt', '--steps']);
    expect(userError(() => parseArgs([], evalCmd))).toContain('missing argument <checkpoint>');
    expect(userError(() => parseArgs(['extra'], train))).toBe("'patchflow train' takes no positional arguments, got 'extra'");
    expect(parseArgs([], bench).positionals).toEqual([]); // string shorthand is optional
    expect(userError(() => parseArgs(['a', 'b'], bench))).toContain("unexpected argument 'b'");
  });
  it('--help / -h short-circuits every other check', () => {
    const r = parseArgs(['--stpes', 'x', '-h'], train);
    expect(r.help).toBe(true);
    expect(r.values.help).toBe(true);
    expect(r.values.steps).toBe(500);
    expect(parseArgs(['--help'], evalCmd).help).toBe(true); // no missing <checkpoint> error
    expect(parseArgs(['ckpt', '--', '--help'], evalCmd).help).toBe(false);
  });
  it('rejects broken specs as programming errors (not UserError)', () => {
    const dup: CommandSpec = { name: 'x', summary: '', flags: [{ name: 'a', type: 'int', help: '' }, { name: 'a', type: 'int', help: '' }] };
    expect(() => parseArgs([], dup)).toThrow(/duplicate flag --a/);
    const bad: CommandSpec = { name: 'x', summary: '', flags: [{ name: 'a', type: 'int', help: '', default: 'three' }] };
    expect(() => parseArgs([], bad)).toThrow(/default of --a/);
  });
});

describe('parseCommand', () => {
  it('dispatches to the command', () => {
    const r = parseCommand(['train', '--steps', '7'], commands);
    expect(r.command).toBe('train');
    expect(r.spec).toBe(train);
    expect(r.values.steps).toBe(7);
    expect(r.help).toBe(false);
    expect(parseCommand(['bench', 'throughput'], commands).positionals).toEqual(['throughput']);
  });
  it('lists commands for unknown or missing ones, with a suggestion', () => {
    expect(userError(() => parseCommand(['trian'], commands))).toBe(
      "unknown command 'trian'; did you mean 'train'? (commands: train, eval, bench, backends)",
    );
    expect(userError(() => parseCommand(['fly'], commands))).toBe("unknown command 'fly' (commands: train, eval, bench, backends)");
    expect(userError(() => parseCommand([], commands))).toContain('expected one of: train, eval, bench, backends');
    expect(userError(() => parseCommand(['--steps', '3'], commands))).toContain("expected a command before '--steps'");
  });
  it('help forms', () => {
    expect(parseCommand(['--help'], commands)).toMatchObject({ command: '', spec: null, help: true });
    expect(parseCommand(['help'], commands).spec).toBeNull();
    expect(parseCommand(['help', 'eval'], commands)).toMatchObject({ command: 'eval', help: true });
    expect(parseCommand(['eval', '-h'], commands)).toMatchObject({ command: 'eval', help: true });
  });
});

describe('formatHelp / formatCommandList', () => {
  it('formats a command', () => {
    expect(formatHelp(evalCmd)).toBe(
      [
        'Usage: patchflow eval [options] <checkpoint> [more...]',
        '',
        'evaluate a checkpoint',
        '',
        'Arguments:',
        '  <checkpoint>  checkpoint directory',
        '  [more...]     extra files',
        '',
        'Options:',
        '  --steps <int>  batches',
        '  -h, --help     Show this help',
        '',
      ].join('\n'),
    );
  });
  it('shows defaults, placeholders, aliases and [no-] for default-true booleans', () => {
    const help = formatHelp(train);
    expect(help).toContain('--steps <int>');
    expect(help).toContain('optimizer steps (default: 500)');
    expect(help).toContain('-o, --out <dir>');
    expect(help).toContain('(default: "runs/train")');
    expect(help).toContain('--[no-]color');
    expect(help).not.toContain('continue a run (default');
  });
  it('lists commands', () => {
    const text = formatCommandList(commands);
    expect(text).toContain('  train     train a model\n');
    expect(text).toContain('  backends  list backends\n');
  });
});

describe('errors: runCli', () => {
  function capture(env: Record<string, string | undefined> = {}) {
    let text = '';
    return { opts: { stderr: { write: (s: string) => (text += s) }, env }, get text() { return text; } };
  }
  it('returns the command exit code when nothing is thrown', async () => {
    const c = capture();
    expect(await runCli(async () => 0, c.opts)).toBe(0);
    expect(await runCli(async () => 130, c.opts)).toBe(130);
    expect(c.text).toBe('');
  });
  it('prints a UserError as one line, exit 2', async () => {
    const c = capture({ PATCHFLOW_DEBUG: '1' });
    expect(await runCli(async () => { throw new UserError('--steps expects an integer, got \'abc\''); }, c.opts)).toBe(2);
    expect(c.text).toBe("patchflow: --steps expects an integer, got 'abc'\n");
  });
  it('passes user errors of the libraries through as one line; DivergenceError exits 3, StorageError 4', async () => {
    const c = capture({ PATCHFLOW_DEBUG: '1' });
    expect(await runCli(async () => { throw new DataError('corpus is empty'); }, c.opts)).toBe(2);
    expect(await runCli(async () => { throw new DivergenceError('loss is NaN at step 12'); }, c.opts)).toBe(3);
    expect(await runCli(async () => { throw new StorageError('could not write x: no space left on device (ENOSPC)', 'ENOSPC', 'x'); }, c.opts)).toBe(4);
    expect(c.text).toBe('patchflow: corpus is empty\npatchflow: loss is NaN at step 12\npatchflow: could not write x: no space left on device (ENOSPC)\n');
  });
  it('recognises user errors by their fields, not their class (a second copy of a package still matches)', () => {
    const copy = Object.assign(new Error('bad\ninput'), { name: 'SomeoneElsesError', userError: true, exitCode: 2 });
    expect(describeError(copy, { env: {} })).toEqual({ exitCode: 2, text: 'patchflow: bad input\n' });
    expect(describeError(Object.assign(new Error('m'), { userError: false }), { env: {} }).exitCode).toBe(1);
  });
  it('treats other errors as internal: hint without debug, stack with PATCHFLOW_DEBUG=1', async () => {
    const quiet = capture();
    expect(await runCli(async () => { throw new TypeError('x is undefined'); }, quiet.opts)).toBe(1);
    expect(quiet.text).toBe('patchflow: internal error: x is undefined\npatchflow: this is a bug; set PATCHFLOW_DEBUG=1 to see the stack trace\n');
    const loud = capture({ PATCHFLOW_DEBUG: '1' });
    expect(await runCli(async () => { throw new TypeError('x is undefined'); }, loud.opts)).toBe(1);
    expect(loud.text.split('\n')[0]).toBe('patchflow: internal error: x is undefined');
    expect(loud.text).toMatch(/TypeError: x is undefined\n\s+at /);
  });
  it('a non-Error value is internal', () => {
    expect(describeError('a string', { env: {} }).text).toMatch(/^patchflow: internal error: a string\n/);
  });
});

describe('every error class the packages export', () => {
  it('is a PatchflowError: a user error with exit code 2, or 3/4/5 where stated', async () => {
    const modules = await Promise.all(
      ['@patchflow/tensor', '@patchflow/trainer', '@patchflow/backend-gpu', '@patchflow/patch-training', '@patchflow/sparsity', '@patchflow/dataflow-runtime', '@patchflow/backend-rdu-sim'].map(
        async (m) => [m, (await import(m)) as Record<string, unknown>] as const,
      ),
    );
    modules.push(['@patchflow/cli errors', { UserError }]);
    const found: string[] = [];
    for (const [mod, exports] of modules) {
      for (const [name, value] of Object.entries(exports)) {
        if (typeof value !== 'function' || !(value.prototype instanceof Error) || value === PatchflowError) continue;
        found.push(name);
        expect(value.prototype instanceof PatchflowError, `${mod}.${name} must extend PatchflowError`).toBe(true);
        // every constructor takes the message first (the other arguments are details for callers)
        const e = new (value as new (m: string) => PatchflowError)(`a ${name}`);
        const want = name === 'DivergenceError' ? 3 : name === 'StorageError' ? 4 : name === 'GpuRuntimeError' ? 5 : 2;
        expect(describeError(e, { env: {} }), `${mod}.${name}`).toEqual({ exitCode: want, text: `patchflow: a ${name}\n` });
      }
    }
    for (const n of ['BackendError', 'ConfigError', 'CheckpointError', 'DataError', 'TokenizerError', 'PluginError', 'DivergenceError', 'StorageError', 'RunLockError', 'GpuLoadError', 'UserError']) {
      expect(found).toContain(n);
    }
  });
});
