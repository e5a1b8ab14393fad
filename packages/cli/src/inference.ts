/** `patchflow eval` and `patchflow generate`: a checkpoint is an ordinary token-level model. */
import { loadTrainedModel, evaluateOnCorpus, generate } from '@patchflow/trainer';
import type { FlagSpec } from './args.js';
import { UserError } from './errors.js';
import { loadBackendModules } from './backends.js';

export const EVAL_FLAGS: FlagSpec[] = [
  { name: 'checkpoint', type: 'string', help: 'run directory (or its checkpoint/ folder)' },
  { name: 'data', type: 'string', help: 'corpus to evaluate on (default: the one the model was trained on); its validation split is used' },
  { name: 'backend', type: 'string', help: 'backend to run on', default: 'cpu' },
  { name: 'batches', type: 'int', help: 'evaluation batches (default: the training config\'s evalBatches)' },
];

export const GENERATE_FLAGS: FlagSpec[] = [
  { name: 'checkpoint', type: 'string', help: 'run directory (or its checkpoint/ folder)' },
  { name: 'prompt', type: 'string', help: 'text to continue', default: '' },
  { name: 'max-tokens', type: 'int', help: 'tokens to generate', default: 200 },
  { name: 'temperature', type: 'number', help: 'sampling temperature (0 = greedy)', default: 0.8 },
  { name: 'top-k', type: 'int', help: 'sample among the k most likely tokens (0 = all)', default: 40 },
  { name: 'seed', type: 'int', help: 'random seed', default: 0 },
  { name: 'backend', type: 'string', help: 'backend to run on', default: 'cpu' },
];

function needCheckpoint(values: Record<string, unknown>): string {
  if (typeof values.checkpoint !== 'string' || !values.checkpoint) throw new UserError('--checkpoint DIR is required');
  return values.checkpoint;
}

export async function evalCommand(values: Record<string, unknown>): Promise<number> {
  const dir = needCheckpoint(values);
  await loadBackendModules();
  const loaded = await loadTrainedModel(dir, String(values.backend));
  const r = await evaluateOnCorpus(loaded, {
    data: typeof values.data === 'string' ? values.data : undefined,
    batches: typeof values.batches === 'number' ? values.batches : undefined,
  });
  const unit = loaded.tokenizer.kind === 'byte' ? 'nats/byte' : 'nats/token';
  process.stdout.write(
    `validation loss ${r.valLoss.toFixed(4)} ${unit}, perplexity ${Math.exp(r.valLoss).toFixed(3)}` +
      (loaded.tokenizer.kind === 'byte' ? `, ${(r.valLoss / Math.LN2).toFixed(3)} bits/byte` : '') +
      ` (${r.tokens.toLocaleString('en-US')} tokens of ${r.corpus}, step ${loaded.step})\n`,
  );
  return 0;
}

export async function generateCommand(values: Record<string, unknown>): Promise<number> {
  const dir = needCheckpoint(values);
  const sampling = { temperature: checkedTemperature(values.temperature), topK: checkedTopK(values['top-k']) };
  await loadBackendModules();
  const loaded = await loadTrainedModel(dir, String(values.backend));
  const prompt = String(values.prompt ?? '');
  // an empty prompt starts from a newline
  const ids = loaded.tokenizer.encode(prompt || '\n');
  const out = await generate(loaded.model, ids, { maxNewTokens: Number(values['max-tokens']), ...sampling, seed: Number(values.seed) });
  process.stdout.write(prompt + loaded.tokenizer.decode(out) + '\n');
  return 0;
}

function checkedTemperature(v: unknown): number {
  const t = Number(v);
  if (!Number.isFinite(t) || t < 0) throw new UserError(`--temperature must be a number >= 0 (0 = greedy), got ${String(v)}`);
  return t;
}

function checkedTopK(v: unknown): number {
  const k = Number(v);
  if (!Number.isInteger(k) || k < 0) throw new UserError(`--top-k must be an integer >= 0 (0 = all tokens), got ${String(v)}`);
  return k;
}
