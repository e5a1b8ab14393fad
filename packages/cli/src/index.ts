/**
 * `patchflow`: a thin command line over @patchflow/trainer, @patchflow/tensor and the backends.
 * Each command parses flags, resolves a config, and hands off; user mistakes become one line on
 * stderr (errors.ts), never a stack trace.
 */
import { parseCommand, formatHelp, type CommandSpec } from './args.js';
import { runCli } from './errors.js';
import { trainCommand, TRAIN_FLAGS } from './train.js';
import { evalCommand, generateCommand, EVAL_FLAGS, GENERATE_FLAGS } from './inference.js';
import { backendsCommand } from './backends.js';
import { benchCommand, BENCH_FLAGS } from './bench/index.js';
import pkg from '../package.json' with { type: 'json' };
import { graphCommand, simulateCommand, GRAPH_FLAGS, SIMULATE_FLAGS } from './simulate.js';
import { tokenizerCommand, TOKENIZER_FLAGS } from './tokenizer.js';
import { exportCommand, importCommand, EXPORT_FLAGS, IMPORT_FLAGS } from './hf.js';

export const COMMANDS: CommandSpec[] = [
  { name: 'train', summary: 'train a GPT on a corpus (default: the bundled Moby Dick, cpu backend)', flags: TRAIN_FLAGS },
  { name: 'eval', summary: 'validation loss and perplexity of a checkpoint', flags: EVAL_FLAGS },
  { name: 'generate', summary: 'sample text from a checkpoint', flags: GENERATE_FLAGS },
  { name: 'backends', summary: 'list backends and whether they can run here', flags: [] },
  { name: 'bench', summary: 'benchmarks: bench throughput|kernels|profile|patch|sparsity|gpu|scaling [--json]', flags: BENCH_FLAGS, positionals: ['suite'] },
  { name: 'graph', summary: 'the op graph of one training step, fused and scheduled (--json for the documented schema)', flags: GRAPH_FLAGS },
  { name: 'tokenizer', summary: 'tokenizer train --vocab N --out tokenizer.json: train a byte-level BPE (Hugging Face tokenizer.json)', flags: TOKENIZER_FLAGS, positionals: [{ name: 'action', help: 'train (the only action)', required: false }] },
  { name: 'export', summary: 'export --format hf --checkpoint DIR --out DIR: a checkpoint as a Hugging Face transformers model', flags: EXPORT_FLAGS },
  { name: 'import', summary: 'import --format hf --from DIR --out RUNDIR: a transformers GPT-2/GPT-NeoX model as a run', flags: IMPORT_FLAGS },
  { name: 'simulate', summary: 'step time, utilization, memory and traffic on a chip: kernel-by-kernel or dataflow', flags: SIMULATE_FLAGS },
];

/** This package's version (package.json, read at build time by tsup's JSON import). */
export const VERSION: string = pkg.version;

export async function main(argv: string[]): Promise<number> {
  return runCli(async () => {
    if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
      process.stdout.write(usage());
      return 0;
    }
    if (argv[0] === '--version' || argv[0] === '-v' || argv[0] === 'version') {
      process.stdout.write(`patchflow ${VERSION}\n`);
      return 0;
    }
    const parsed = parseCommand(argv, COMMANDS);
    if (parsed.values.help) {
      process.stdout.write(formatHelp(COMMANDS.find((c) => c.name === parsed.command)!));
      return 0;
    }
    switch (parsed.command) {
      case 'train':
        return trainCommand(parsed.values);
      case 'eval':
        return evalCommand(parsed.values);
      case 'generate':
        return generateCommand(parsed.values);
      case 'backends':
        return backendsCommand();
      case 'bench':
        return benchCommand(parsed.positionals, parsed.values);
      case 'graph':
        return graphCommand(parsed.values);
      case 'simulate':
        return simulateCommand(parsed.values);
      case 'export':
        return exportCommand(parsed.values);
      case 'import':
        return importCommand(parsed.values);
      case 'tokenizer':
        return tokenizerCommand(parsed.positionals, parsed.values);
      default:
        return 2;
    }
  });
}

function usage(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'patchflow: train GPT-style language models at a fraction of the usual cost',
    '',
    'usage: patchflow <command> [flags]    (patchflow <command> --help for its flags)',
    '',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`),
    '',
  ].join('\n');
}
