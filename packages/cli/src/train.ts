/** `patchflow train`: flags and config file -> TrainConfig -> train(), with progress, metrics, plot and summary. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { resolveConfigFrom, train, checkRunLock, asStorageError, CHECKPOINT_DIR, CHECKPOINT_OLD_DIR, type TrainConfig, type TrainResult } from '@patchflow/trainer';
// importing the plugin packages registers their plugins, so config.plugins entries build them
import { describePlan, PLUGIN_NAME as PATCH_PLUGIN } from '@patchflow/patch-training';
import { PLUGIN_NAME as SPARSITY_PLUGIN } from '@patchflow/sparsity';
import type { FlagSpec } from './args.js';
import { FLAG_KEYS } from './config-flags.js';
import { UserError } from './errors.js';
import { Progress } from './progress.js';
import { lineChartSvg } from './plot.js';
import { loadBackendModules } from './backends.js';

export const TRAIN_FLAGS: FlagSpec[] = [
  { name: 'config', type: 'string', help: 'JSON config file (TrainConfig keys; see the README); flags override it' },
  { name: 'data', type: 'string', help: 'corpus: a .txt file, a directory of .txt files, .jsonl with a "text" field, or corpus:NAME (moby-dick, sotu, brown, english) (default: bundled Moby Dick)' },
  { name: 'tokenizer', type: 'string', help: 'Hugging Face tokenizer.json (default: bytes)' },
  { name: 'steps', type: 'int', help: 'optimizer steps of token-level training (the token budget)' },
  { name: 'out', type: 'string', help: 'run directory for checkpoints, metrics.jsonl and loss.svg', default: 'runs/train' },
  { name: 'backend', type: 'string', help: 'cpu (default), webgpu, tfjs-cpu, or a registered third-party backend' },
  { name: 'precision', type: 'string', help: "fp32 (default) or f16: mixed precision on the compiled webgpu step (f16 matmuls, on tensor cores where the GPU exposes subgroup matrices; f32 master weights; dynamic loss scaling)" },
  { name: 'resume', type: 'boolean', help: 'continue from the checkpoint in --out' },
  { name: 'batch-size', type: 'int', help: 'sequences per micro-batch' },
  { name: 'grad-accum', type: 'int', help: 'micro-batches per optimizer step' },
  { name: 'lr', type: 'number', help: 'peak learning rate' },
  { name: 'seq-len', type: 'int', help: 'context length' },
  { name: 'layers', type: 'int', help: 'transformer layers' },
  { name: 'd-model', type: 'int', help: 'model width' },
  { name: 'heads', type: 'int', help: 'attention heads' },
  { name: 'eval-every', type: 'int', help: 'evaluate every N steps (0: only at the end)' },
  { name: 'checkpoint-every', type: 'int', help: 'checkpoint every N steps (0: only at the end)' },
  { name: 'seed', type: 'int', help: 'random seed' },
  { name: 'patch-size', type: 'number', help: 'patch-level training: K tokens per patch (integer >= 1; default 4 when --patch-fraction is given)' },
  { name: 'patch-fraction', type: 'number', help: 'patch-level training: share λ of the training tokens in the patch phase, in [0, 1) (default 2/3 when --patch-size is given)' },
  { name: 'patch-optimizer', type: 'string', help: 'patch-level training: token phase restarts (reset, default) or continues (continue) the optimizer and LR schedule' },
  { name: 'sparsity', type: 'number', help: 'sparse training: share of zero weights in the attention and MLP matrices, in [0, 1) (default 0.75 when another --sparsity-* flag is given)' },
  { name: 'sparsity-pattern', type: 'string', help: 'sparse training: unstructured (default), nm:N:M (e.g. nm:2:4), or block:B (e.g. block:32; uses the block-sparse kernels)' },
  { name: 'sparsity-mode', type: 'string', help: 'sparse training: static (mask from initialisation, default), gmp (gradual magnitude pruning from dense), or rigl (drop and regrow)' },
  { name: 'sparsity-distribution', type: 'string', help: 'sparse training: per-layer density uniform (default) or erk' },
  { name: 'dense-fraction', type: 'number', help: 'sparse training: share of the tokens in a final dense phase (sparse-to-dense), in [0, 1) (default 0)' },
  { name: 'no-compile', type: 'boolean', help: 'run the eager tfjs step even where the backend has a compiled step (webgpu)' },
  { name: 'quiet', type: 'boolean', help: 'no progress bar' },
];

function setPath(c: Record<string, unknown>, key: string, v: unknown): void {
  const parts = key.split('.');
  let o = c;
  for (const p of parts.slice(0, -1)) o = (o[p] ??= {}) as Record<string, unknown>;
  o[parts.at(-1)!] = v;
}

export function readConfigFile(file: string): Record<string, unknown> {
  if (!fs.existsSync(file)) throw new UserError(`config file not found: ${file}`);
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new UserError(`config file ${file} is not valid JSON: ${(e as Error).message}`);
  }
}

export function configFromFlags(values: Record<string, unknown>): TrainConfig {
  const fromFile = typeof values.config === 'string' ? readConfigFile(values.config) : undefined;
  const fromFlags: Record<string, unknown> = {};
  for (const [flag, key] of Object.entries(FLAG_KEYS)) if (values[flag] !== undefined) setPath(fromFlags, key, values[flag]);
  if (values['no-compile'] === true) fromFlags.compile = false;
  // --patch-* / --sparsity-* flags override single keys of the file's plugin entry, not the whole entry
  for (const name of [PATCH_PLUGIN, SPARSITY_PLUGIN]) {
    const fromFileEntry = (fromFile?.plugins as Record<string, unknown> | undefined)?.[name];
    const fromFlagEntry = (fromFlags.plugins as Record<string, unknown> | undefined)?.[name];
    if (fromFlagEntry && typeof fromFileEntry === 'object' && fromFileEntry !== null) (fromFlags.plugins as Record<string, unknown>)[name] = { ...fromFileEntry, ...fromFlagEntry };
  }
  return resolveConfigFrom(fromFile, fromFlags);
}

export async function trainCommand(values: Record<string, unknown>): Promise<number> {
  const config = configFromFlags(values);
  const out = String(values.out);
  const resume = values.resume === true;
  const ckptDir = path.join(out, CHECKPOINT_DIR);
  const oldDir = path.join(out, CHECKPOINT_OLD_DIR);
  // another run writing there is the first thing to say (train() takes the lock itself)
  checkRunLock(out);
  if (!resume && (fs.existsSync(ckptDir) || fs.existsSync(oldDir))) {
    throw new UserError(`${out} already holds a checkpoint: pass --resume to continue it, or --out to start a new run elsewhere`);
  }
  if (resume && !fs.existsSync(ckptDir) && !fs.existsSync(oldDir)) {
    throw new UserError(`--resume: no checkpoint in ${out}`);
  }
  if (resume) {
    const ignored = ['config', ...Object.keys(FLAG_KEYS).filter((f) => f !== 'backend' && f !== 'steps' && f !== 'precision')].filter((f) => values[f] !== undefined);
    // --backend, --precision and --no-compile apply to the resumed run: train() takes them over the checkpoint's config
    if (ignored.length) process.stderr.write(`patchflow: note: --resume continues with the checkpoint's config; ignoring ${ignored.map((f) => `--${f}`).join(', ')}\n`);
  }
  await loadBackendModules();
  // the trainer builds the plugins from config.plugins (on resume, the checkpoint's) and adds the
  // backend's run plugins (rdu-sim's simulated clock)
  const quiet = values.quiet === true;

  const ac = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts > 1) {
      process.stderr.write('\npatchflow: second interrupt, exiting without saving\n');
      process.exit(130);
    }
    process.stderr.write('\npatchflow: interrupt received, saving a checkpoint (Ctrl-C again to quit at once)\n');
    ac.abort();
  };
  process.on('SIGINT', onSigint);
  let progress: Progress | undefined;
  let result: TrainResult;
  try {
    result = await train({
      config,
      outDir: out,
      resume,
      // --steps on --resume extends the run (a finished one too)
      ...(resume && typeof values.steps === 'number' ? { extendSteps: values.steps } : {}),
      signal: ac.signal,
      onEvent: (e) => {
        switch (e.type) {
          case 'start':
            progress = quiet ? undefined : new Progress({ total: e.totalSteps });
            if (e.phases.length > 1) log(progress, describePlan(e.phases));
            log(progress, `patchflow: ${e.resumedFrom !== undefined ? `resuming at step ${e.resumedFrom}, ` : ''}${fmtParams(e.parameters)} parameters, ${e.totalSteps} steps in ${e.phases.length} phase(s): ${e.phases.map((p) => `${p.name} (${p.steps} steps)`).join(', ')}; backend ${config.backend}`);
            break;
          case 'phase':
            if (e.phase.index > 0 || e.phase.name !== 'train') log(progress, `phase ${e.phase.index + 1}: ${e.phase.name}, ${e.phase.steps} steps`);
            break;
          case 'step':
            progress?.update({ step: e.step, loss: e.loss, tokensPerSecond: e.tokensPerSecond, phase: e.phase });
            break;
          case 'eval':
            log(progress, `step ${e.step}: validation loss ${e.valLoss.toFixed(4)}`);
            break;
          case 'log':
            log(progress, `patchflow: ${e.message}`);
            break;
          case 'checkpoint':
            break;
        }
      },
    });
  } finally {
    progress?.done();
    process.off('SIGINT', onSigint);
  }
  if (result.interrupted) {
    process.stderr.write(`patchflow: stopped at step ${result.steps}; checkpoint saved in ${out}. Continue with: patchflow train --out ${out} --resume\n`);
    return 130;
  }
  writeLossPlot(out, result);
  process.stdout.write(summary(result, config, out) + '\n');
  for (const p of result.plugins) for (const line of p.summary?.() ?? []) process.stdout.write(line + '\n');
  if (result.phases.length > 1) process.stdout.write(describePlan(result.phases) + '\n');
  return 0;
}

function log(progress: Progress | undefined, line: string): void {
  if (progress) progress.log(line);
  else process.stderr.write(line + '\n');
}

function fmtParams(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : `${(n / 1e3).toFixed(1)}k`;
}

/**
 * Training losses of the whole run. After a resume `r.losses` holds only this process's steps, so
 * the earlier ones come from metrics.jsonl (the trainer trims it to the checkpoint's step on resume).
 */
export function lossHistory(out: string, r: TrainResult): { step: number; loss: number }[] {
  const first = r.losses[0]?.step ?? Infinity;
  if (first <= 1) return r.losses;
  const earlier: { step: number; loss: number }[] = [];
  let text = '';
  try {
    text = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8');
  } catch {
    return r.losses;
  }
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const rec = JSON.parse(line) as { type?: unknown; step?: unknown; loss?: unknown };
      if (rec.type === 'train' && typeof rec.step === 'number' && typeof rec.loss === 'number' && rec.step < first) earlier.push({ step: rec.step, loss: rec.loss });
    } catch {
      // a torn line: skip it
    }
  }
  return [...earlier, ...r.losses];
}

function writeLossPlot(out: string, r: TrainResult): void {
  const svg = lineChartSvg({
    title: 'patchflow training loss',
    xLabel: 'step',
    yLabel: 'loss (nats/token)',
    series: [
      { name: 'train', points: lossHistory(out, r).map((l) => [l.step, l.loss] as [number, number]) },
      { name: 'validation', points: r.evals.map((e) => [e.step, e.valLoss] as [number, number]) },
    ],
  });
  const file = path.join(out, 'loss.svg');
  try {
    fs.writeFileSync(file, svg);
  } catch (e) {
    throw asStorageError(e, 'the loss plot', file) ?? e;
  }
}

export function summary(r: TrainResult, config: TrainConfig, out: string): string {
  const losses = lossHistory(out, r);
  const first = losses[0]?.loss;
  const tps = r.tokens / Math.max(1e-9, r.seconds);
  const ppl = Math.exp(r.valLoss);
  const unit = config.tokenizer ? 'nats/token' : 'nats/byte';
  return (
    `Trained a ${r.model.config.nLayer}-layer, d=${r.model.config.dModel} GPT (${fmtParams(r.model.parameterCount())} parameters) ` +
    `for ${r.steps} steps over ${r.phases.length} phase(s) on ${config.backend}: ${r.tokens.toLocaleString('en-US')} tokens, ` +
    `${(r.flops / 1e12).toFixed(2)} TFLOP, in ${r.seconds.toFixed(0)} s (${Math.round(tps).toLocaleString('en-US')} tokens/s; ${r.stepSeconds.toFixed(1)} s of it in training steps). ` +
    `Training loss went from ${first?.toFixed(3) ?? 'n/a'} to ${losses.at(-1)?.loss.toFixed(3) ?? 'n/a'}; ` +
    `final validation loss ${r.valLoss.toFixed(4)} ${unit} (perplexity ${ppl.toFixed(2)}` +
    (config.tokenizer ? ')' : `, ${(r.valLoss / Math.LN2).toFixed(3)} bits/byte)`) +
    `. Checkpoint, metrics.jsonl and loss.svg are in ${out}.`
  );
}
