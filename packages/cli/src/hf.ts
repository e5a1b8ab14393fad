/**
 * `patchflow export --format hf` and `patchflow import --format hf`: thin wrappers over
 * @patchflow/trainer's exportHf / importHf (the mapping and its checks live there).
 */
import { exportHf, importHf } from '@patchflow/trainer';
import type { FlagSpec } from './args.js';
import { UserError } from './errors.js';
import { readConfigFile } from './train.js';

const FORMATS = ['hf'];

export const EXPORT_FLAGS: FlagSpec[] = [
  { name: 'format', type: 'string', help: 'hf: a Hugging Face transformers directory (GPT-2 for learned positions, GPT-NeoX for rotary)', placeholder: 'format' },
  { name: 'checkpoint', type: 'string', help: 'run directory (or its checkpoint/ folder) to export', placeholder: 'dir' },
  { name: 'out', type: 'string', short: 'o', help: 'directory to write config.json, model.safetensors, tokenizer.json and tokenizer_config.json to', placeholder: 'dir' },
];

export const IMPORT_FLAGS: FlagSpec[] = [
  { name: 'format', type: 'string', help: 'hf: a transformers GPT-2 or GPT-NeoX directory (config.json + model.safetensors)', placeholder: 'format' },
  { name: 'from', type: 'string', help: 'the Hugging Face model directory to read', placeholder: 'dir' },
  { name: 'out', type: 'string', short: 'o', help: 'new run directory to write (its checkpoint/ is what eval, generate and train --resume read)', placeholder: 'dir' },
  { name: 'tokenizer', type: 'string', help: "tokenizer.json to use instead of the directory's, or 'bytes' for the byte tokenizer", placeholder: 'path' },
  { name: 'config', type: 'string', help: 'JSON training config of the new run (data, steps, optim, ...) for train --resume; the model comes from config.json', placeholder: 'path' },
];

function need(values: Record<string, unknown>, flag: string, what: string): string {
  const v = values[flag];
  if (typeof v !== 'string' || v === '') throw new UserError(`--${flag} ${what} is required`);
  return v;
}

function checkFormat(values: Record<string, unknown>): void {
  const f = need(values, 'format', 'hf');
  if (!FORMATS.includes(f)) throw new UserError(`unknown --format '${f}' (supported: ${FORMATS.join(', ')})`);
}

export async function exportCommand(values: Record<string, unknown>): Promise<number> {
  checkFormat(values);
  const ckpt = need(values, 'checkpoint', 'DIR');
  const out = need(values, 'out', 'DIR');
  const r = exportHf(ckpt, out);
  process.stdout.write(
    `wrote ${out}: ${r.modelClass} (model_type ${r.architecture}), ${r.parameters.toLocaleString('en-US')} parameters from step ${r.step}, ` +
      `${r.tokenizer === 'byte' ? 'byte-level tokenizer (ids = bytes)' : 'tokenizer.json of the run'}; files ${r.files.join(', ')}\n`,
  );
  return 0;
}

export async function importCommand(values: Record<string, unknown>): Promise<number> {
  checkFormat(values);
  const from = need(values, 'from', 'DIR');
  const out = need(values, 'out', 'DIR');
  const config = typeof values.config === 'string' ? readConfigFile(values.config) : undefined;
  const r = importHf(from, out, { tokenizer: typeof values.tokenizer === 'string' ? values.tokenizer : undefined, config });
  const m = r.model;
  process.stdout.write(
    `imported ${from} (${r.architecture}, ${r.dtypes.join('/')}) into ${r.checkpointDir}: ${r.parameters.toLocaleString('en-US')} parameters, ` +
      `${m.nLayer} layers, d ${m.dModel}, ${m.nHead} heads, context ${m.seqLen}, vocab ${m.vocabSize}, ${m.positions} positions, ${m.tiedEmbeddings ? 'tied' : 'untied'} head, ` +
      `${r.tokenizer === 'byte' ? 'byte tokenizer' : 'tokenizer.json'}${r.ignored.length ? `; ignored ${r.ignored.length} buffer tensor(s)` : ''}\n`,
  );
  return 0;
}
